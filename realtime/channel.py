"""Bounded channels between stages, with an explicit policy for late frames.

Capacity gives backpressure: `put` waits while the channel is full (the offline render runs
entirely on that). Lateness is judged when the consumer takes a frame: a frame whose
deadline has passed is handled by the channel's `LatePolicy`, and counted:

    policy        late frame                        use for
    DROP          discarded, consumer gets the next  video on the way to the renderer
    REPEAT_LAST   replaced by the last frame         video towards a transport (constant fps)
                  delivered, restamped with the
                  late frame's timing
    BLOCK         delivered anyway                   audio: never silently dropped

Frames of an older epoch than the session's (after an interrupt) are dropped as
`stale_epoch` whatever the policy. In-stream markers (anything that is not a `Frame`) are
never late and never dropped.
"""
from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .clock import Clock
from .errors import ChannelClosed, ChannelFull
from .frames import Frame
from .metrics import RuntimeMetrics

T = TypeVar("T")
_SKIPPED = object()


class LatePolicy(enum.Enum):
    DROP = "drop"
    REPEAT_LAST = "repeat_last"
    BLOCK = "block"


@dataclass(slots=True)
class ChannelStats:
    """Per-session counts, mirrored into Prometheus (which aggregates across sessions)."""

    put: int = 0
    got: int = 0
    late: int = 0
    repeated: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


class Channel(Generic[T]):
    """Single-producer, single-consumer bounded channel."""

    def __init__(self, name: str, *, capacity: int, policy: LatePolicy, clock: Clock,
                 epoch: Callable[[], int] = lambda: 0, metrics: RuntimeMetrics | None = None,
                 graph: str = "", consumer: str = "") -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.name, self.capacity, self.policy = name, capacity, policy
        self._clock, self._epoch = clock, epoch
        self._items: deque[T] = deque()
        self._since: deque[float] = deque()  # when each queued item was pushed (queue time)
        self._getter: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None
        self._closed = False
        self._last: Frame | None = None
        self.stats = ChannelStats()
        self._m = metrics
        self._graph = graph
        # how long a frame waited here before its stage took it: the stage's queue time
        self._queue = metrics.stage_queue.labels(graph, consumer) if metrics is not None and consumer else None

    # -- producer side -------------------------------------------------------------------
    async def put(self, item: T) -> None:
        while len(self._items) >= self.capacity and not self._closed:
            self._putter = asyncio.get_running_loop().create_future()
            try:
                await self._putter
            finally:
                self._putter = None
        if self._closed:
            raise ChannelClosed(self.name)
        self._push(item)

    def offer(self, item: T) -> None:
        """Non-blocking put for live sources that cannot wait: when full, the oldest frame is
        dropped (counted as `overflow`); a BLOCK channel refuses with `ChannelFull` instead."""
        if self._closed:
            raise ChannelClosed(self.name)
        if len(self._items) >= self.capacity:
            if self.policy is LatePolicy.BLOCK:
                raise ChannelFull(self.name)
            # the oldest *frame* goes: markers (segment ends, ...) are never dropped
            oldest = next((i for i, x in enumerate(self._items) if isinstance(x, Frame)), None)
            if oldest is not None:
                del self._items[oldest]
                del self._since[oldest]
                self._count_drop("overflow")
        self._push(item)

    def _push(self, item: T) -> None:
        self._items.append(item)
        self._since.append(self._clock.now())
        self.stats.put += 1
        self._set_depth()
        _wake(self._getter)

    def close(self) -> None:
        """No more frames: the consumer drains what is queued, then gets ChannelClosed."""
        self._closed = True
        _wake(self._getter)
        _wake(self._putter)

    @property
    def closed(self) -> bool:
        return self._closed

    def clear(self) -> int:
        """Drop everything queued (after an interrupt); returns how many frames went."""
        n = len(self._items)
        for _ in range(n):
            self._count_drop("stale_epoch")
        self._items.clear()
        self._since.clear()
        self._set_depth()
        _wake(self._putter)
        return n

    # -- consumer side -------------------------------------------------------------------
    async def get(self) -> T:
        while True:
            while not self._items:
                if self._closed:
                    raise ChannelClosed(self.name)
                self._getter = asyncio.get_running_loop().create_future()
                try:
                    await self._getter
                finally:
                    self._getter = None
            item = self._take()
            if item is not _SKIPPED:
                return item

    def try_get(self) -> T | None:
        """The next frame if one is ready now (policies applied), else None. For batching."""
        while self._items:
            item = self._take()
            if item is not _SKIPPED:
                return item
        return None

    def _take(self) -> T | object:
        """Pop the head and apply the policies; _SKIPPED if it was dropped."""
        item = self._items.popleft()
        since = self._since.popleft()
        if self._queue is not None:
            self._queue.observe(max(0.0, self._clock.now() - since))
        self._set_depth()
        _wake(self._putter)
        if not isinstance(item, Frame):
            self.stats.got += 1
            return item
        if item.epoch < self._epoch():
            self._count_drop("stale_epoch")
            return _SKIPPED
        if self._clock.now() > item.deadline:
            self.stats.late += 1
            if self._m is not None:
                self._m.deadline_misses.labels(self._graph, self.name, self.policy.value).inc()
            if self.policy is LatePolicy.DROP:
                self._count_drop("late")
                return _SKIPPED
            if self.policy is LatePolicy.REPEAT_LAST and self._last is not None:
                self.stats.repeated += 1
                item = self._last.restamped(item)  # type: ignore[assignment]
        self._last = item  # type: ignore[assignment]
        self.stats.got += 1
        return item

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                item = await self.get()
            except ChannelClosed:
                return
            yield item

    def qsize(self) -> int:
        return len(self._items)

    # -- accounting ----------------------------------------------------------------------
    def _count_drop(self, reason: str) -> None:
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + 1
        if self._m is not None:
            self._m.frames_dropped.labels(self._graph, self.name, reason).inc()

    def _set_depth(self) -> None:
        if self._m is not None:
            self._m.queue_depth.labels(self._graph, self.name).set(len(self._items))


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)
