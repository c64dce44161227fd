"""Cross-session batching: many sessions call one engine; requests that queue up while the
engine is busy run together in its next call.

    renderer = BatchingWorker(EngineWorker(engine), max_batch=8)
    [image] = await renderer.run([item])      # from any session, concurrently

The policy is the simplest that never adds latency: a request that finds the engine idle runs
at once, alone; while a call is in flight, new requests wait, and the next call takes all of
them (up to `max_batch` items, oldest first). Under light load it is an ordinary worker;
under heavy load the batches grow by themselves, and the cost per item falls (the renderer:
2.3 ms per 256x256 frame alone, 1.2 ms in fours, on cpu2). No deadline-aware waiting: that
belongs to a scheduler that knows the frames' deadlines (a later issue).

A replica whose engine dies (`EngineDied`: its child process was killed, say) fails the batch
it had, leaves the rotation and is restarted in the background (retrying with back-off); the
other replicas carry the load meanwhile, and with none left requests wait for the restart.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from .base import EngineDied, EngineWorker

log = logging.getLogger(__name__)
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(slots=True)
class BatchStats:
    calls: int = 0
    items: int = 0
    largest: int = 0
    restarts: int = 0  # replicas brought back after EngineDied

    @property
    def mean_batch(self) -> float:
        return self.items / self.calls if self.calls else 0.0


@dataclass(slots=True)
class _Request(Generic[In, Out]):
    items: list[In]
    future: asyncio.Future[list[Out]]


class BatchingWorker(Generic[In, Out]):
    """`replicas`: more workers of the same model (own copy, own thread). A request goes to
    an idle one; with all busy, it waits and the first to finish takes it (in its batch).
    torch computes without the GIL, so two replicas use two cores."""

    def __init__(self, worker: EngineWorker[In, Out], *, max_batch: int = 8,
                 replicas: Sequence[EngineWorker[In, Out]] = (),
                 on_batch: Callable[[int], None] | None = None,
                 on_restart: Callable[[], None] | None = None) -> None:
        self.worker = worker
        self.workers = [worker, *replicas]
        self.engine = worker.engine
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._on_batch = on_batch  # told the size of each call (a metric)
        self._requests: deque[_Request[In, Out]] = deque()
        self._drainers: list[asyncio.Task[None] | None] = [None] * len(self.workers)
        self._down: dict[int, asyncio.Task[None]] = {}  # replicas being restarted
        self._on_restart = on_restart

    async def run(self, items: Sequence[In]) -> list[Out]:
        future: asyncio.Future[list[Out]] = asyncio.get_running_loop().create_future()
        self._requests.append(_Request(list(items), future))
        self._wake_one()
        return await future

    def _wake_one(self) -> None:
        """Start a drainer on an idle replica, finding dead ones on the way (an idle replica
        whose process died would otherwise be found only when next used, under load)."""
        woken = False
        for i, d in enumerate(self._drainers):
            if (d is not None and not d.done()) or i in self._down:
                continue
            if self.workers[i].started and not self.workers[i].engine.alive():
                self._mark_down(i, f"engine {self.engine.name!r}: its process is gone")
            elif not woken:
                # Owned by the batcher, not by the caller: cancelling one session's request
                # cancels its future only, never a call that carries other sessions' items.
                self._drainers[i] = asyncio.create_task(self._drain(i), name=f"batch-{self.engine.name}-{i}")
                woken = True

    async def _drain(self, index: int) -> None:
        worker = self.workers[index]
        requests = self._requests
        while requests:
            batch: list[_Request[In, Out]] = []
            n = 0
            while requests and (not batch or n + len(requests[0].items) <= self.max_batch):
                req = requests.popleft()
                if req.future.done():  # its caller went away (session closed)
                    continue
                batch.append(req)
                n += len(req.items)
            if not batch:
                continue
            try:
                outs = await worker.run([x for req in batch for x in req.items])
            except asyncio.CancelledError:  # close(): nobody will get an answer
                for req in batch:
                    req.future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - every caller of this call gets the failure
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(exc)
                if isinstance(exc, EngineDied):
                    self._mark_down(index, str(exc))
                    self._wake_one()  # another replica takes over what is queued
                    return
                continue
            self.stats.calls += 1
            self.stats.items += n
            self.stats.largest = max(self.stats.largest, n)
            if self._on_batch is not None:
                self._on_batch(n)
            i = 0
            for req in batch:
                k = len(req.items)
                if not req.future.done():
                    req.future.set_result(outs[i:i + k])
                i += k

    def _mark_down(self, index: int, why: str) -> None:
        log.warning("%s (replica %d): restarting it", why, index)
        self._down[index] = asyncio.create_task(self._restart(index), name=f"restart-{self.engine.name}-{index}")

    async def _restart(self, index: int) -> None:
        worker = self.workers[index]
        for attempt in itertools.count():
            try:
                await worker.restart()
                break
            except Exception as exc:  # noqa: BLE001 - keep trying: the other replicas serve meanwhile
                wait = RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)]
                log.error("engine %s (replica %d) failed to restart: %s; again in %.1f s",
                          self.engine.name, index, exc, wait)
                await asyncio.sleep(wait)
        self.stats.restarts += 1
        if self._on_restart is not None:
            self._on_restart()
        log.info("engine %s (replica %d) restarted", self.engine.name, index)
        del self._down[index]
        if self._requests:
            self._wake_one()

    async def close(self) -> None:
        for t in self._down.values():
            t.cancel()
        await asyncio.gather(*self._down.values(), return_exceptions=True)
        self._down.clear()
        running = [d for d in self._drainers if d is not None]
        for d in running:
            d.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for req in self._requests:
            req.future.cancel()
        self._requests.clear()
        for w in self.workers:
            await w.close()
