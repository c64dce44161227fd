"""The file sink: audio and video frames in, one MP4 out."""
from __future__ import annotations

from engines import ThreadWorker
from realtime import AudioFrame, Channel, ChannelClosed, Frame, Stage, StageContext, VideoFrame
from realtime.stage import StageMeter

from .mp4 import Mp4Writer

_END = object()


class Mp4Sink(Stage):
    """Merges the audio and video streams in presentation order and writes them through a
    codec thread. Paced (live) it waits until each frame is due, like a player would."""

    inputs = ("audio", "video")
    outputs = ()

    def __init__(self, name: str, writer: Mp4Writer, *, budget_s: float = 0.040) -> None:
        super().__init__(name, budget_s=budget_s)
        self.writer = writer
        self.thread = ThreadWorker("mp4")
        self.completed = False

    async def setup(self, ctx: StageContext) -> None:
        self.thread.start()
        try:
            await self.thread.call(self.writer.open)
        except BaseException:
            await self.thread.close()  # teardown is not called for a stage whose setup failed
            raise

    async def run(self, ctx: StageContext) -> None:
        meter = ctx.meter(self)
        a_ch, v_ch = ctx.input("audio"), ctx.input("video")
        a, v = await _next(a_ch), await _next(v_ch)
        pending: list[Frame] = []
        while a is not _END or v is not _END:
            take_audio = v is _END or (a is not _END and a.time <= v.time)  # type: ignore[union-attr]
            item: Frame = a if take_audio else v  # type: ignore[assignment]
            if take_audio:
                a = await _next(a_ch)
            else:
                v = await _next(v_ch)
            if ctx.paced:
                await ctx.media_clock.wait_until_due(item.time)
            pending.append(item)
            # One hop to the codec thread per video frame (with the audio before it), or per
            # item when paced, instead of one per item.
            if ctx.paced or isinstance(item, VideoFrame) or len(pending) >= 8:
                await self._write(ctx, meter, pending)
                pending = []
        if pending:
            await self._write(ctx, meter, pending)
        await self.thread.call(self.writer.close)
        self.completed = True

    async def _write(self, ctx: StageContext, meter: StageMeter, items: list[Frame]) -> None:
        meter.frames_in(len(items))
        t0 = ctx.clock.now()
        await self.thread.call(self._write_blocking, items)
        meter.work(ctx.clock.now() - t0, len(items))
        for item in items:
            ctx.event("written", stream="audio" if isinstance(item, AudioFrame) else "video",
                      media_time=item.time)

    def _write_blocking(self, items: list[Frame]) -> None:
        for item in items:
            if isinstance(item, AudioFrame):
                self.writer.write_audio(item.samples, item.sample_rate, item.pts)
            elif isinstance(item, VideoFrame):
                self.writer.write_video(item.image, item.pts, item.format)

    async def teardown(self) -> None:
        if not self.completed:
            await self.thread.call(self.writer.abort)
        await self.thread.close()


async def _next(ch: Channel[object]) -> Frame | object:
    while True:
        try:
            item = await ch.get()
        except ChannelClosed:
            return _END
        if isinstance(item, Frame):
            return item
