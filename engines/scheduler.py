"""Earliest deadline first, across sessions, in front of one or more engine workers (lanes).

    speech = DeadlineScheduler(EngineWorker(VoicePool("piper")),
                               lanes=[(EngineWorker(VoicePool("piper")), {"start"})])
    [utt] = await speech.run([item], deadline=clock_time_when_its_audio_is_needed)

Jobs of every session queue here; each lane's worker runs one job at a time, always the
earliest-deadline job among the kinds it takes (ties: first come). The first worker takes
every kind; extra lanes take only the kinds named, so a new sentence's first words ("start")
never wait behind a long continuation piece even when the continuation work alone fills the
machine: that is the part of a reply a listener waits for. A new utterance's first words (needed
now) also go ahead of continuation pieces that will not be heard for seconds. Jobs are not
preempted: the longest job a lane takes bounds how long a more urgent one waits for that lane
(the speech engine keeps its pieces small for that).

`backlog(deadline, kind)` estimates how long a job of that kind and deadline would wait (per
lane that takes it: the remaining time of the job in flight plus every queued job it would take
due no later; the least of those), from the measured cost of recent jobs per kind: what
admission control tells a client before it queues more speech. Lateness (finished after the
deadline) and queue depth go to the callbacks (metrics).
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Collection, Sequence
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


@dataclass(eq=False)
class _Lane:
    worker: Any
    kinds: frozenset[str] | None  # None: every kind
    running: tuple[str, float] | None = None  # kind, start of the job in flight
    task: asyncio.Task[None] | None = None

    def takes(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds


class DeadlineScheduler(Generic[In, Out]):
    def __init__(self, worker: Any, *, lanes: Sequence[tuple[Any, Collection[str]]] = (),
                 clock: Callable[[], float] = time.monotonic,
                 kind_of: Callable[[Sequence[In]], str] = lambda items: "job",
                 on_late: Callable[[float], None] | None = None,
                 on_depth: Callable[[int], None] | None = None) -> None:
        self.worker = worker
        self.engine = worker.engine
        # the specialised lanes first: a job they take, they take before the general one can
        self._lanes = [*(_Lane(w, frozenset(k)) for w, k in lanes), _Lane(worker, None)]
        self._clock, self._kind_of = clock, kind_of
        self._on_late, self._on_depth = on_late, on_depth
        self._queue: list[_Job[In, Out]] = []  # a handful of jobs: a scan beats a heap per lane
        self._seq = itertools.count()
        self._cost: dict[str, float] = {}  # kind -> recent seconds per job (EWMA)
        self.jobs = 0
        self.late = 0

    async def run(self, items: Sequence[In], *, deadline: float | None = None) -> list[Out]:
        future: asyncio.Future[list[Out]] = asyncio.get_running_loop().create_future()
        job = _Job(self._clock() if deadline is None else deadline, next(self._seq), list(items),
                   self._kind_of(items), future)
        self._queue.append(job)
        self._depth()
        self._wake()
        return await future

    def cost(self, kind: str) -> float:
        return self._cost.get(kind, 0.0)

    def backlog(self, deadline: float | None = None, kind: str = "start") -> float:
        """Estimated seconds before a job of `kind` due at `deadline` (default: now) would start."""
        deadline = self._clock() if deadline is None else deadline
        now = self._clock()
        waits = []
        for lane in self._lanes:
            if not lane.takes(kind):
                continue
            wait = 0.0
            if lane.running is not None:
                running, started = lane.running
                wait += max(0.0, self.cost(running) - (now - started))
            wait += sum(self.cost(j.kind) for j in self._queue
                        if j.deadline <= deadline and lane.takes(j.kind) and not j.future.done())
            waits.append(wait)
        return min(waits, default=0.0)

    def _depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(len(self._queue))

    def _next(self, lane: _Lane) -> _Job[In, Out] | None:
        jobs = [j for j in self._queue if lane.takes(j.kind)]
        if not jobs:
            return None
        job = min(jobs)
        self._queue.remove(job)
        self._depth()
        return job

    async def _dispatch(self, lane: _Lane) -> None:
        while (job := self._next(lane)) is not None:
            if job.future.done():  # its caller went away (interrupt, session closed)
                continue
            t0 = self._clock()
            lane.running = (job.kind, t0)
            try:
                out = await lane.worker.run(job.items)
            except asyncio.CancelledError:
                if not job.future.done():
                    job.future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - that job's caller gets it; the others go on
                if not job.future.done():
                    job.future.set_exception(exc)
                continue
            finally:
                lane.running = None
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
            # a general lane that just freed up may find work a busy specialised lane left
            self._wake()

    def _wake(self) -> None:
        """For each queued job, starts the first idle lane that takes it (specialised first)."""
        for job in self._queue:
            for lane in self._lanes:
                if lane.takes(job.kind) and (lane.task is None or lane.task.done()):
                    lane.task = asyncio.create_task(self._dispatch(lane), name=f"edf-{self.engine.name}")
                    break

    async def close(self) -> None:
        tasks = [lane.task for lane in self._lanes if lane.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for job in self._queue:
            job.future.cancel()
        self._queue.clear()
        for lane in self._lanes:
            await lane.worker.close()
