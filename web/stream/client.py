"""Python client of `/v1/stream`: send text, get events and media back — raw, decoded, or
recorded into an MP4.

    async with await StreamClient.connect("ws://127.0.0.1:8080/v1/stream", config=Config(size=256)) as c:
        await c.say("Hello there.", id="hi")
        async for item in c.decoded():          # events (pydantic models) and av frames
            if isinstance(item, Done) and item.id == "hi":
                break

`record_say(url, text, "out.mp4")` is what `avatar client say` runs. Decoding and MP4 writing
happen on a worker thread, never on the event loop.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from engines import ThreadWorker
from pipelines.media.mp4 import Mp4Writer

from . import framing
from .protocol import (SERVER_EVENTS, Append, Config, Done, Error, Flush, Interrupt, Keyframe, Ready, Say,
                       ServerEvent)


class StreamError(RuntimeError):
    """The server refused or ended the stream (an error event, or a close)."""


@dataclass(frozen=True, slots=True)
class MediaPacket:
    stream: str  # "video" | "audio"
    pts: int
    duration: int
    time_base: Fraction
    flags: int
    data: bytes
    received: float  # time.monotonic() when it arrived

    @property
    def keyframe(self) -> bool:
        return bool(self.flags & framing.KEYFRAME)

    @property
    def start(self) -> bool:
        return bool(self.flags & framing.START)

    @property
    def time(self) -> float:
        return float(self.pts * self.time_base)

    @property
    def end(self) -> float:
        return float((self.pts + self.duration) * self.time_base)


class StreamClient:
    def __init__(self, ws: ClientConnection, ready: Ready) -> None:
        self.ws = ws
        self.ready = ready
        self._vtb = Fraction(*ready.video.time_base)
        self._atb = Fraction(*ready.audio.time_base)

    @classmethod
    async def connect(cls, url: str, *, token: str | None = None, config: Config | None = None,
                      open_timeout: float = 30.0, max_size: int = 16 * 1024 * 1024) -> StreamClient:
        """Connects, sends `config` (the server's defaults if None) and waits for `ready`."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        ws = await connect(url, additional_headers=headers, max_size=max_size, compression=None,
                           open_timeout=open_timeout, ping_interval=None)
        try:
            await ws.send((config or Config()).model_dump_json(exclude_none=True))
            async with asyncio.timeout(open_timeout):
                while True:
                    msg = await ws.recv()
                    if isinstance(msg, bytes):
                        continue
                    event = SERVER_EVENTS.validate_json(msg)
                    if isinstance(event, Ready):
                        return cls(ws, event)
                    if isinstance(event, Error):
                        raise StreamError(f"{event.code.value}: {event.message}")
        except BaseException:
            await ws.close()
            raise

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.ws.close()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    # -- sending -------------------------------------------------------------------------------
    async def send(self, message: BaseModel) -> None:
        await self.ws.send(message.model_dump_json(exclude_none=True))

    async def say(self, text: str, *, voice: str | None = None, id: str | None = None) -> None:  # noqa: A002
        await self.send(Say(text=text, voice=voice, id=id))

    async def append(self, text: str, *, voice: str | None = None, id: str | None = None) -> None:  # noqa: A002
        await self.send(Append(text=text, voice=voice, id=id))

    async def flush(self) -> None:
        await self.send(Flush())

    async def interrupt(self) -> None:
        await self.send(Interrupt())

    async def keyframe(self) -> None:
        await self.send(Keyframe())

    # -- receiving -----------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[ServerEvent | MediaPacket]:
        return self.items()

    async def items(self) -> AsyncIterator[Any]:
        """Events (pydantic models of protocol.py) and MediaPackets, in arrival order, until the
        connection closes."""
        while True:
            try:
                msg = await self.ws.recv()
            except ConnectionClosed:
                return
            if isinstance(msg, str):
                yield SERVER_EVENTS.validate_json(msg)
                continue
            head, payload = framing.unpack(msg)
            video = head.stream == framing.VIDEO
            yield MediaPacket("video" if video else "audio", head.pts, head.duration,
                              self._vtb if video else self._atb, head.flags, payload, time.monotonic())

    async def decoded(self, worker: ThreadWorker | None = None) -> AsyncIterator[Any]:
        """Events, and decoded frames: av.VideoFrame (yuv420p) and av.AudioFrame (mono, 48 kHz),
        with pts and time_base set. Decoding runs on `worker` (a private one if None)."""
        own = worker is None
        worker = worker or ThreadWorker("stream-decode")
        worker.start()
        decoder = await worker.call(MediaDecoder, self.ready)
        try:
            async for item in self.items():
                if isinstance(item, MediaPacket):
                    for frame in await worker.call(decoder.decode, item):
                        yield frame
                else:
                    yield item
        finally:
            if own:
                await worker.close()


class MediaDecoder:
    """Blocking decoders for one stream's packets (H.264, Opus or PCM)."""

    def __init__(self, ready: Ready) -> None:
        self.vtb, self.atb = Fraction(*ready.video.time_base), Fraction(*ready.audio.time_base)
        self.video = av.CodecContext.create("h264", "r")
        self.pcm = ready.audio.codec == "pcm_s16le"
        self.rate = ready.audio.sample_rate
        self.audio = None if self.pcm else av.CodecContext.create("libopus" if "libopus" in av.codecs_available
                                                                  else "opus", "r")
        if self.audio is not None:
            self.audio.sample_rate, self.audio.layout = self.rate, "mono"
        self.seen_keyframe = False

    def decode(self, p: MediaPacket) -> list[av.VideoFrame | av.AudioFrame]:
        if p.stream == "video":
            if not self.seen_keyframe and not p.keyframe:
                return []  # nothing decodable before the first keyframe
            self.seen_keyframe = True
            return self._frames(self.video, p, self.vtb)
        if self.pcm:
            samples = np.frombuffer(p.data, "<i2").reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = self.rate, p.pts, self.atb
            return [frame]
        assert self.audio is not None
        return self._frames(self.audio, p, self.atb)

    @staticmethod
    def _frames(ctx: Any, p: MediaPacket, tb: Fraction) -> list[Any]:
        packet = av.Packet(p.data)
        packet.pts, packet.dts, packet.time_base = p.pts, p.pts, tb
        frames = list(ctx.decode(packet))
        for f in frames:
            if f.pts is None:
                f.pts = p.pts
            f.time_base = tb
        return frames


# -- recording ------------------------------------------------------------------------------------
@dataclass
class Recording:
    path: str
    media_seconds: float  # the file's length (both streams end at the utterance's `done`)
    video_frames: int
    audio_seconds: float
    events: list[BaseModel] = field(default_factory=list)
    first_video_s: float | None = None  # from `say` sent to the utterance's first video packet
    first_audio_s: float | None = None


class _Mp4Recorder:
    """Writes decoded frames into an MP4 (H.264 + AAC) a little behind the live edge, so the
    file can end exactly at the utterance's end whatever arrives after it."""

    HOLD_S = 0.5  # a `done` follows its last media by well under this

    def __init__(self, path: str, ready: Ready) -> None:
        v = ready.video
        self.writer = Mp4Writer(path, width=v.width, height=v.height, fps=v.fps)
        self.writer.open()
        self.pending: deque[av.VideoFrame | av.AudioFrame] = deque()
        self.audio_samples = 0

    def add(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        self.pending.append(frame)
        edge = float(frame.pts * frame.time_base) - self.HOLD_S
        while self.pending and float(self.pending[0].pts * self.pending[0].time_base) < edge:
            self._write(self.pending.popleft(), None)

    def finish(self, end_s: float) -> str:
        while self.pending:
            self._write(self.pending.popleft(), end_s)
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()

    def _write(self, frame: av.VideoFrame | av.AudioFrame, end_s: float | None) -> None:
        t = float(frame.pts * frame.time_base)
        if end_s is not None and t >= end_s:
            return
        if isinstance(frame, av.VideoFrame):
            self.writer.write_video(frame.to_ndarray(format="yuv420p"), int(frame.pts), "yuv420p")
            return
        samples = frame.to_ndarray().astype(np.float32).reshape(-1)
        if frame.format.name in ("s16", "s16p"):
            samples = samples / 32768.0
        pts, rate = int(frame.pts), frame.sample_rate
        if pts < 0:  # codec priming (Opus pre-skip): before the stream's time 0
            samples, pts = samples[-pts:], 0
        if end_s is not None:
            samples = samples[: max(0, round(end_s * rate) - pts)]
        if len(samples):
            self.writer.write_audio(samples, rate, pts)
            self.audio_samples += len(samples)


async def record_say(url: str, text: str, output: str | Path, *, token: str | None = None,
                     config: Config | None = None, voice: str | None = None, timeout: float = 600.0,
                     on_item: Callable[[Any], None] | None = None) -> Recording:
    """Connects, says `text`, records the stream from its start to the utterance's `done` into
    `output` (MP4, written under a temporary name and renamed when complete)."""
    worker = ThreadWorker("record")
    worker.start()
    recorder: _Mp4Recorder | None = None
    try:
        async with await StreamClient.connect(url, token=token, config=config) as client:
            recorder = await worker.call(_Mp4Recorder, str(output), client.ready)
            rec = Recording(str(output), 0.0, 0, 0.0)
            t_say = time.monotonic()
            await client.say(text, voice=voice, id="recording")
            started: float | None = None
            async with asyncio.timeout(timeout):
                async for item in _decoded_with_arrival(client, worker):
                    if on_item is not None:
                        on_item(item)
                    if isinstance(item, tuple):
                        packet, frames = item
                        if started is not None and packet.end > started:
                            if packet.stream == "video" and rec.first_video_s is None:
                                rec.first_video_s = packet.received - t_say
                            if packet.stream == "audio" and rec.first_audio_s is None:
                                rec.first_audio_s = packet.received - t_say
                        for f in frames:
                            rec.video_frames += isinstance(f, av.VideoFrame)
                            await worker.call(recorder.add, f)
                        continue
                    rec.events.append(item)
                    if getattr(item, "type", "") == "started":
                        started = item.media_time
                    if isinstance(item, Error) and (item.fatal or item.id == "recording"):
                        raise StreamError(f"{item.code.value}: {item.message}")
                    if isinstance(item, Done) and item.id == "recording":
                        rec.media_seconds = item.media_time
                        break
                else:
                    raise StreamError(f"the server closed the stream (code {client.close_code}) before the end")
            rec.path = await worker.call(recorder.finish, rec.media_seconds)
            recorder = None
            rec.video_frames = min(rec.video_frames, round(rec.media_seconds * client.ready.video.fps))
            rec.audio_seconds = rec.media_seconds
            return rec
    finally:
        if recorder is not None:
            await worker.call(recorder.abort)
        await worker.close()


async def _decoded_with_arrival(client: StreamClient, worker: ThreadWorker) -> AsyncIterator[Any]:
    """Events as they are; media as (packet, decoded frames) so arrival times stay visible."""
    decoder = await worker.call(MediaDecoder, client.ready)
    async for item in client.items():
        if isinstance(item, MediaPacket):
            yield item, await worker.call(decoder.decode, item)
        else:
            yield item
