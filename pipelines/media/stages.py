"""The file sink: audio and video frames in, one MP4 out."""
from __future__ import annotations

from engines import ThreadWorker
from realtime import AudioFrame, Channel, ChannelClosed, Frame, Stage, StageContext, VideoFrame

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
        while a is not _END or v is not _END:
            take_audio = v is _END or (a is not _END and a.time <= v.time)  # type: ignore[union-attr]
            item = a if take_audio else v
            if ctx.paced:
                await ctx.media_clock.wait_until_due(item.time)  # type: ignore[union-attr]
            meter.frames_in()
            t0 = ctx.clock.now()
            if isinstance(item, AudioFrame):
                await self.thread.call(self.writer.write_audio, item.samples, item.sample_rate, item.pts)
                a = await _next(a_ch)
            else:
                assert isinstance(item, VideoFrame)
                await self.thread.call(self.writer.write_video, item.image, item.pts)
                v = await _next(v_ch)
            meter.work(ctx.clock.now() - t0)
            ctx.event("written", stream="audio" if take_audio else "video", media_time=item.time)  # type: ignore[union-attr]
        await self.thread.call(self.writer.close)
        self.completed = True

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
