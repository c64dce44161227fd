"""A bounded send queue per connection: what a slow reader costs the server, and no more.

The connection pushes events and media as they are made; one writer task takes them out and
awaits the socket. When the client reads too slowly the queue grows, and the policy is:

1. Video goes first. Once the queue holds more than `video_bytes`, video frames are dropped —
   and every video frame after, until a keyframe, since the frames after a gap reference the
   lost ones. When the queue has drained below a quarter of `video_bytes`, `on_need_keyframe`
   is called (once per episode) so the stream recovers without waiting for the next GOP; the
   first video frame sent after a gap is flagged DISCONTINUITY.
2. Audio and events are never dropped. If the queue still exceeds `max_bytes`, or its oldest
   message has waited more than `max_lag_s`, `push` raises `SlowConsumer` and the connection
   closes with code 4008. Memory per connection is thus bounded by `max_bytes` (plus the
   socket buffers), whatever the client does.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from . import framing


class SlowConsumer(Exception):
    """The client is too far behind: close it (4008)."""


@dataclass(slots=True)
class Outgoing:
    data: bytes | str
    size: int
    enqueued: float
    video: bool = False


@dataclass(slots=True)
class QueueStats:
    pushed: int = 0
    sent_bytes: int = 0
    video_dropped: int = 0
    keyframe_requests: int = 0
    max_bytes_seen: int = 0


class SendQueue:
    def __init__(self, *, max_bytes: int, video_bytes: int, max_lag_s: float, clock: Callable[[], float],
                 on_need_keyframe: Callable[[], None]) -> None:
        self.max_bytes, self.video_bytes, self.max_lag_s = max_bytes, video_bytes, max_lag_s
        self._clock = clock
        self._on_need_keyframe = on_need_keyframe
        self._items: deque[Outgoing] = deque()
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._video_gap = False  # dropping video until a keyframe gets through
        self._asked_key = False
        self.stats = QueueStats()

    @property
    def bytes(self) -> int:
        return self._bytes

    def lag(self) -> float:
        """How long the oldest queued message has waited."""
        return self._clock() - self._items[0].enqueued if self._items else 0.0

    def push_event(self, text: str) -> None:
        self._push(Outgoing(text, len(text), self._clock()))

    def push_audio(self, flags: int, pts: int, duration: int, payload: bytes) -> None:
        data = framing.pack(framing.AUDIO, flags, pts, duration, payload)
        self._push(Outgoing(data, len(data), self._clock()))

    def push_video(self, flags: int, pts: int, duration: int, payload: bytes) -> bool:
        """False if the frame was dropped (policy 1)."""
        key = bool(flags & framing.KEYFRAME)
        if self._bytes > self.video_bytes or (self._video_gap and not key):
            self._video_gap = True
            self.stats.video_dropped += 1
            self.check()
            return False
        if self._video_gap:  # a keyframe, and room for it: the gap ends here
            flags |= framing.DISCONTINUITY
            self._video_gap = self._asked_key = False
        data = framing.pack(framing.VIDEO, flags, pts, duration, payload)
        self._push(Outgoing(data, len(data), self._clock(), video=True))
        return True

    def check(self) -> None:
        """Raise SlowConsumer if the client is too far behind (policy 2)."""
        if self._bytes > self.max_bytes:
            raise SlowConsumer(f"send queue over {self.max_bytes} bytes")
        if self.lag() > self.max_lag_s:
            raise SlowConsumer(f"client {self.lag():.1f} s behind (limit {self.max_lag_s:g} s)")

    def _push(self, item: Outgoing) -> None:
        self._items.append(item)
        self._bytes += item.size
        self.stats.pushed += 1
        self.stats.max_bytes_seen = max(self.stats.max_bytes_seen, self._bytes)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self.check()

    async def get(self) -> Outgoing:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        self._bytes -= item.size
        self.stats.sent_bytes += item.size
        if self._video_gap and not self._asked_key and self._bytes < self.video_bytes // 4:
            self._asked_key = True
            self.stats.keyframe_requests += 1
            self._on_need_keyframe()
        return item

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
