"""Earliest deadline first, across sessions, in front of one engine worker.

    speech = DeadlineScheduler(EngineWorker(VoicePool("piper")))
    [utt] = await speech.run([item], deadline=clock_time_when_its_audio_is_needed)

Jobs of every session queue here; the worker runs one job at a time, always the one whose
deadline is earliest (ties: first come). A new utterance's first words (needed now) go ahead
of continuation pieces that will not be heard for seconds, so one stream's reply does not wait
behind everybody else's long sentences. Jobs are not preempted: the cost of the longest job is
the longest a more urgent one can wait (the speech engine keeps its pieces small for that).

`backlog(deadline)` estimates how long a job with that deadline would wait (the remaining time
of the job in flight plus every queued job due no later), from the measured cost of recent
jobs per kind: what admission control tells a client before it queues more speech. Lateness
(finished after the deadline) and queue depth go to the callbacks (metrics).
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(order=True)
class _Job(Generic[In, Out]):
    deadline: float
    seq: int
    items: list[In] = field(compare=False)
    kind: str = field(compare=False)
    future: asyncio.Future[list[Out]] = field(compare=False)


class DeadlineScheduler(Generic[In, Out]):
    def __init__(self, worker: Any, *, clock: Callable[[], float] = time.monotonic,
                 kind_of: Callable[[Sequence[In]], str] = lambda items: "job",
                 on_late: Callable[[float], None] | None = None,
                 on_depth: Callable[[int], None] | None = None) -> None:
        self.worker = worker
        self.engine = worker.engine
        self._clock, self._kind_of = clock, kind_of
        self._on_late, self._on_depth = on_late, on_depth
        self._heap: list[_Job[In, Out]] = []
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._cost: dict[str, float] = {}  # kind -> recent seconds per job (EWMA)
        self._running: tuple[str, float] | None = None  # kind, start of the job in flight
        self.jobs = 0
        self.late = 0

    async def run(self, items: Sequence[In], *, deadline: float | None = None) -> list[Out]:
        future: asyncio.Future[list[Out]] = asyncio.get_running_loop().create_future()
        job = _Job(self._clock() if deadline is None else deadline, next(self._seq), list(items),
                   self._kind_of(items), future)
        heapq.heappush(self._heap, job)
        self._depth()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._dispatch(), name=f"edf-{self.engine.name}")
        return await future

    def cost(self, kind: str) -> float:
        return self._cost.get(kind, 0.0)

    def backlog(self, deadline: float | None = None) -> float:
        """Estimated seconds before a job due at `deadline` (default: now) would start."""
        deadline = self._clock() if deadline is None else deadline
        wait = 0.0
        if self._running is not None:
            kind, started = self._running
            wait += max(0.0, self.cost(kind) - (self._clock() - started))
        wait += sum(self.cost(j.kind) for j in self._heap if j.deadline <= deadline and not j.future.done())
        return wait

    def _depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(len(self._heap))

    async def _dispatch(self) -> None:
        while self._heap:
            job = heapq.heappop(self._heap)
            self._depth()
            if job.future.done():  # its caller went away (interrupt, session closed)
                continue
            t0 = self._clock()
            self._running = (job.kind, t0)
            try:
                out = await self.worker.run(job.items)
            except asyncio.CancelledError:
                if not job.future.done():
                    job.future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - that job's caller gets it; the others go on
                if not job.future.done():
                    job.future.set_exception(exc)
                continue
            finally:
                self._running = None
            end = self._clock()
            took = end - t0
            prev = self._cost.get(job.kind)
            self._cost[job.kind] = took if prev is None else prev + 0.2 * (took - prev)
            self.jobs += 1
            if end > job.deadline:
                self.late += 1
            if self._on_late is not None:
                self._on_late(max(0.0, end - job.deadline))
            if not job.future.done():
                job.future.set_result(out)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for job in self._heap:
            job.future.cancel()
        self._heap.clear()
        await self.worker.close()
