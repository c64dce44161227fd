"""aiortc tracks fed by a call's graph.

aiortc pulls: its sender awaits `track.recv()` and encodes what it gets. Our tracks never
compute in `recv()`: the graph's sink hands them finished frames, each with its due time on
the session's media clock, and `recv()` waits until that time and returns the frame. Both
tracks are released by the same clock, so the RTP timestamps (video: from the frame's pts;
audio: aiortc's running sample count, which equals media time because our audio never has a
gap) and the send times agree, and the browser lip-syncs them.

A track's queue is bounded: if the peer's sender stalls, the oldest frames go (counted)
rather than memory growing.
"""
from __future__ import annotations

import asyncio
import fractions
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime import Clock


@dataclass(slots=True)
class Release:
    frame: av.AudioFrame | av.VideoFrame
    due: float  # clock time to hand it to the encoder
    media_time: float


class ClockedTrack(MediaStreamTrack):
    """A track whose frames are pushed by the graph and released at their due time."""

    def __init__(self, kind: str, clock: Clock, *, capacity: int,
                 on_release: Callable[[Release, float], None] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._clock = clock
        self._queue: deque[Release] = deque()
        self._capacity = capacity
        self._ready = asyncio.Event()
        self._on_release = on_release
        self.dropped = 0
        self.released = 0

    def push(self, frame: av.AudioFrame | av.VideoFrame, due: float, media_time: float) -> None:
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(Release(frame, due, media_time))
        self._ready.set()

    def pending(self) -> int:
        return len(self._queue)

    async def recv(self) -> av.AudioFrame | av.VideoFrame:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        item = self._queue.popleft()
        await self._clock.sleep_until(item.due)
        self.released += 1
        if self._on_release is not None:
            self._on_release(item, self._clock.now())
        return item.frame

    def stop(self) -> None:
        super().stop()
        self._ready.set()  # wake a waiting recv() so the sender sees the end


def audio_frame(samples: np.ndarray, sample_rate: int, pts: int) -> av.AudioFrame:
    """Mono float samples -> an s16 frame (what aiortc's Opus encoder takes)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16).reshape(1, -1)
    f = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    f.sample_rate, f.pts, f.time_base = sample_rate, pts, fractions.Fraction(1, sample_rate)
    return f


VIDEO_TIME_BASE = fractions.Fraction(1, 90000)


def video_frame(image: np.ndarray, fmt: str, media_time: float) -> av.VideoFrame:
    f = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
    f.pts, f.time_base = round(media_time * 90000), VIDEO_TIME_BASE
    return f
