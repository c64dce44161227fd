"""One deadline-aware batcher: many sessions call one engine; their requests run together.

    renderer = Batcher(EngineWorker(engine), BatchPolicy(max_batch=8, max_delay_s=0.004))
    [image] = await renderer.run([item], slack_s=0.030, session=call_id)   # from any session

The policy (`BatchPolicy`) is declared, not spread over the callers:
- `max_batch`: items per engine call at most.
- `max_delay_s`: how long a request that finds an engine idle may wait for others to join
  it. 0 (the default) never adds latency: a request that finds the engine idle runs at once,
  alone, and the requests that queue while a call is in flight run together in the next.
  Above 0 the batcher waits for more, but never past the point where waiting longer would
  miss the earliest deadline in the queue: deadline minus the measured compute time of the
  batch it would run, minus `margin_s`.
- `buckets`: the batch sizes a shape-specialised engine was built for (engines/module_engine.py
  pads to them); the compute time is measured and predicted per bucket.

Every request has a deadline (`slack_s`: seconds from now until its result is needed; None:
now). The queue runs earliest deadline first, but a session's requests keep their order
(a request is never taken before an earlier one of the same `session`). One bad request
fails only its own caller: when a call of several requests raises, each is run again alone
and only the ones that fail again get the error. A cancelled caller's request is skipped.
Queue time (arrival to the engine call) and compute time (the engine call) are reported
apart (`on_queue`, `on_compute`; the server's avatar_engine_queue_seconds and
avatar_engine_compute_seconds), as are the batch sizes and requests finished past their
deadline (`on_late`).

`replicas`: more workers of the same model (own copy, own thread or process). A request goes
to an idle one; with all busy, it waits and the first to finish takes it (in its batch).
A replica whose engine dies (`EngineDied`: its child process was killed, say) fails the batch
it had, leaves the rotation and is restarted in the background (retrying with back-off); the
other replicas carry the load meanwhile, and with none left requests wait for the restart.

Why the render stage still keeps `in_flight` and the frame grid (pipelines/render/stage.py,
realtime/graph.py) beside this: the grid puts every session's frames on the same ticks, so
their requests arrive together and batch without waiting; `in_flight` lets a session's next
frame be queued here while its previous one renders on another replica. Both feed this
batcher; neither batches by itself any more.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from .base import EngineDied, EngineWorker

log = logging.getLogger(__name__)
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch: int = 8
    max_delay_s: float = 0.0
    buckets: tuple[int, ...] = ()
    margin_s: float = 0.002

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if self.max_delay_s < 0 or self.margin_s < 0:
            raise ValueError("max_delay_s and margin_s must be >= 0")

    def bucket(self, n: int) -> int:
        """The batch size an engine call of n items really computes (padded up to a bucket)."""
        return next((b for b in sorted(self.buckets) if b >= n), n)


@dataclass(slots=True)
class BatchStats:
    calls: int = 0
    items: int = 0
    largest: int = 0
    restarts: int = 0  # replicas brought back after EngineDied
    isolated: int = 0  # failed calls of several requests, re-run one by one
    late: int = 0  # requests answered after their deadline

    @property
    def mean_batch(self) -> float:
        return self.items / self.calls if self.calls else 0.0


@dataclass(slots=True)
class _Request(Generic[In, Out]):
    items: list[In]
    future: asyncio.Future[list[Out]]
    arrived: float
    deadline: float
    session: Hashable
    seq: int


class Batcher(Generic[In, Out]):
    def __init__(self, worker: EngineWorker[In, Out], policy: BatchPolicy | None = None, *,
                 replicas: Sequence[EngineWorker[In, Out]] = (),
                 clock: Callable[[], float] = time.monotonic,
                 on_batch: Callable[[int], None] | None = None,
                 on_queue: Callable[[float], None] | None = None,
                 on_compute: Callable[[float], None] | None = None,
                 on_late: Callable[[float], None] | None = None,
                 on_restart: Callable[[], None] | None = None) -> None:
        self.worker = worker
        self.workers = [worker, *replicas]
        self.engine = worker.engine
        self.policy = policy or BatchPolicy()
        self.stats = BatchStats()
        self._clock = clock
        self._on_batch, self._on_queue, self._on_compute = on_batch, on_queue, on_compute
        self._on_late, self._on_restart = on_late, on_restart
        self._requests: deque[_Request[In, Out]] = deque()
        self._seq = itertools.count()
        self._drainers: list[asyncio.Task[None] | None] = [None] * len(self.workers)
        self._waiting = 0  # drainers holding the queue open for more requests (max_delay_s)
        self._arrival = asyncio.Event()
        self._down: dict[int, asyncio.Task[None]] = {}  # replicas being restarted
        self._cost: dict[int, float] = {}  # bucket -> recent compute seconds per call (EWMA)

    @property
    def max_batch(self) -> int:
        return self.policy.max_batch

    async def run(self, items: Sequence[In], *, slack_s: float | None = None,
                  session: Hashable = None) -> list[Out]:
        """The engine's outputs for `items`, needed within `slack_s` seconds (None: now).
        `session`: requests with the same key are taken in the order they came."""
        now = self._clock()
        future: asyncio.Future[list[Out]] = asyncio.get_running_loop().create_future()
        seq = next(self._seq)
        self._requests.append(_Request(list(items), future, now, now + max(0.0, slack_s or 0.0),
                                       session if session is not None else ("request", seq), seq))
        self._arrival.set()
        if not self._waiting:  # a drainer holding the queue open takes this one with it
            self._wake_one()
        return await future

    def cost(self, n: int) -> float:
        """Predicted seconds of an engine call of n items (0 until one of that size ran)."""
        b = self.policy.bucket(n)
        if b in self._cost:
            return self._cost[b]
        known = sorted(self._cost)
        if not known:
            return 0.0
        near = min(known, key=lambda k: abs(k - b))
        return self._cost[near] * b / near  # roughly linear in the items beyond what was seen

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

    def _ordered(self) -> list[_Request[In, Out]]:
        """Live requests, earliest deadline first, each session's in the order they came: a
        request ranks by the earliest deadline of itself and its session's later requests."""
        live = [r for r in self._requests if not r.future.done()]
        earliest: dict[Hashable, float] = {}
        rank: dict[int, float] = {}
        for r in reversed(live):
            rank[r.seq] = earliest[r.session] = min(r.deadline, earliest.get(r.session, r.deadline))
        return sorted(live, key=lambda r: (rank[r.seq], r.seq))

    def _take(self) -> list[_Request[In, Out]]:
        batch: list[_Request[In, Out]] = []
        n = 0
        for r in self._ordered():
            if batch and n + len(r.items) > self.policy.max_batch:
                break
            batch.append(r)
            n += len(r.items)
        taken = {id(r) for r in batch}
        self._requests = deque(r for r in self._requests if id(r) not in taken and not r.future.done())
        return batch

    async def _hold_open(self) -> None:
        """With max_delay_s: wait for more requests while the batch is not full, until the
        oldest has waited max_delay_s or waiting longer would miss the earliest deadline."""
        p = self.policy
        while True:
            live = [r for r in self._requests if not r.future.done()]
            n = sum(len(r.items) for r in live)
            if not live or n >= p.max_batch:
                return
            until = min(min(r.arrived for r in live) + p.max_delay_s,
                        min(r.deadline for r in live) - self.cost(min(n + 1, p.max_batch)) - p.margin_s)
            wait = until - self._clock()
            if wait <= 0:
                return
            self._arrival.clear()
            self._waiting += 1
            try:
                await asyncio.wait_for(self._arrival.wait(), wait)
            except TimeoutError:
                return
            finally:
                self._waiting -= 1

    async def _drain(self, index: int) -> None:
        worker = self.workers[index]
        while self._requests:
            if self.policy.max_delay_s > 0:
                await self._hold_open()
            batch = self._take()
            if not batch:
                continue
            try:
                await self._call(worker, batch)
            except EngineDied as exc:
                self._mark_down(index, str(exc))
                self._wake_one()  # another replica takes over what is queued
                return

    async def _call(self, worker: EngineWorker[In, Out], batch: list[_Request[In, Out]]) -> None:
        """One engine call for `batch`; a failure of several requests is narrowed down by
        running each alone. EngineDied fails the whole batch and is raised (the replica is gone)."""
        start = self._clock()
        n = sum(len(r.items) for r in batch)
        for r in batch:
            if self._on_queue is not None:
                self._on_queue(start - r.arrived)
        try:
            outs = await worker.run([x for r in batch for x in r.items])
        except asyncio.CancelledError:  # close(): nobody will get an answer
            for r in batch:
                r.future.cancel()
            raise
        except EngineDied as exc:
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc)
            raise
        except Exception as exc:  # noqa: BLE001 - narrowed down to the request(s) that cause it
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            self.stats.isolated += 1
            log.warning("engine %s: a call of %d requests failed (%s); running each alone",
                        self.engine.name, len(batch), exc)
            for r in batch:
                if not r.future.done():
                    await self._call(worker, [r])
            return
        end = self._clock()
        took = end - start
        b = self.policy.bucket(n)
        prev = self._cost.get(b)
        self._cost[b] = took if prev is None else prev + 0.2 * (took - prev)
        self.stats.calls += 1
        self.stats.items += n
        self.stats.largest = max(self.stats.largest, n)
        if self._on_batch is not None:
            self._on_batch(n)
        if self._on_compute is not None:
            self._on_compute(took)
        i = 0
        for r in batch:
            k = len(r.items)
            if end > r.deadline + 1e-9:
                self.stats.late += 1
            if self._on_late is not None:
                self._on_late(max(0.0, end - r.deadline))
            if not r.future.done():
                r.future.set_result(outs[i:i + k])
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
