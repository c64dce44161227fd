"""Stages at the WebRTC edge of a call: the caller's microphone in, the avatar's tracks out."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime import AudioFrame, Stage, StageContext, VideoFrame

from .tracks import ClockedTrack, audio_frame, video_frame

log = logging.getLogger(__name__)


class MicSource(Stage):
    """Reads the caller's audio track as fast as it arrives (aiortc's receive queue is
    unbounded: a slow reader would build latency) into a bounded channel that drops the
    oldest chunk when full. Frames are stamped on the session timeline by their RTP-derived
    pts, placed by the earliest-arriving frame, so network jitter does not bend the caller's
    timeline. Arrival times are kept for the latency measurement."""

    inputs = ()

    def __init__(self, name: str = "mic", *, slack_s: float = 0.0) -> None:
        super().__init__(name)
        self.slack_s = slack_s  # the caller's audio is shown this long after it is heard
        self._track: asyncio.Future[MediaStreamTrack] | None = None
        self.arrivals: deque[tuple[float, float]] = deque(maxlen=4000)  # (session time, clock time)
        self.frames = 0
        # copies of the caller's audio (samples, rate, session time): the call's perception
        self.taps: list[Callable[[np.ndarray, int, float], None]] = []

    def attach(self, track: MediaStreamTrack) -> None:
        if self._track is None:
            self._track = asyncio.get_running_loop().create_future()
        if not self._track.done():
            self._track.set_result(track)

    async def run(self, ctx: StageContext) -> None:
        if self._track is None:
            self._track = asyncio.get_running_loop().create_future()
        track = await self._track
        out = ctx.output()
        origin = ctx.media_clock.origin or ctx.clock.now()
        first_pts: int | None = None
        offset = float("inf")  # session time of the caller's pts 0, from the earliest-arriving frame
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return  # the caller stopped sending
            if not isinstance(frame, av.AudioFrame):
                continue
            now = ctx.clock.now()
            rate = frame.sample_rate
            pcm = frame.to_ndarray()
            samples = _mono_float(pcm, frame)
            pts = frame.pts if frame.pts is not None else 0
            if first_pts is None:
                first_pts = pts
            # The caller's timeline is its RTP clock; where it sits on ours is set by the frame
            # that arrived earliest relative to its pts (the first ones often come in a burst,
            # late, when the connection opens), so jitter never bends it and bursts never push it.
            offset = min(offset, (now - origin) - (pts - first_pts) / rate)
            t = offset + (pts - first_pts) / rate
            if t < 0:  # before the session's media time starts (its origin is on the frame grid)
                continue
            self.arrivals.append((t, now))
            self.frames += 1
            for tap in self.taps:
                tap(samples, rate, t)
            with contextlib.suppress(Exception):
                out.offer(AudioFrame(pts=round(t * rate), time_base=Fraction(1, rate), samples=samples,
                                     sample_rate=rate, entered=now, deadline=ctx.media_clock.due(t + self.slack_s),
                                     epoch=ctx.epoch()))


def _mono_float(pcm: np.ndarray, frame: av.AudioFrame) -> np.ndarray:
    """libav audio (packed or planar, int16 or float) -> mono float32."""
    channels = len(frame.layout.channels)
    x = pcm.astype(np.float32)
    if frame.format.name.startswith("s16"):
        x /= 32768.0
    if frame.format.is_planar:
        x = x.reshape(channels, -1).mean(0)
    else:
        x = x.reshape(-1, channels).mean(1)
    return x


class TrackSink(Stage):
    """Hands the graph's audio and video to the call's two tracks, each frame due at its
    presentation time. One media clock for both: the RTP timestamps and send times agree."""

    inputs = ("audio", "video")
    outputs = ()

    def __init__(self, name: str, audio: ClockedTrack, video: ClockedTrack) -> None:
        super().__init__(name)
        self.audio, self.video = audio, video

    async def run(self, ctx: StageContext) -> None:
        await asyncio.gather(self._audio(ctx), self._video(ctx))

    async def _audio(self, ctx: StageContext) -> None:
        async for f in ctx.input("audio"):
            if isinstance(f, AudioFrame):
                # 20 ms pieces: aiortc's Opus encoder makes one packet per 20 ms but stamps all
                # the packets of one frame with the same RTP timestamp, and receivers (aiortc's,
                # a browser's) keep one packet per timestamp — a 40 ms frame lost half its audio.
                step = max(1, f.sample_rate // 50)
                for i in range(0, len(f.samples), step):
                    t = f.time + i / f.sample_rate
                    self.audio.push(audio_frame(f.samples[i:i + step], f.sample_rate, f.pts + i),
                                    ctx.media_clock.due(t), t)

    async def _video(self, ctx: StageContext) -> None:
        meter = ctx.meter(self)
        async for f in ctx.input("video"):
            if isinstance(f, VideoFrame):
                meter.frames_in()
                self.video.push(video_frame(f.image, f.format, f.time), ctx.media_clock.due(f.time), f.time)
