"""Claim: the speech engine every session shares runs the most urgent synthesis first — jobs
queued while it is busy run in deadline order (a new utterance's first words, needed now, go
ahead of pieces needed in seconds), a caller that left is skipped, one failing job fails only
its caller, and the backlog a newcomer would wait is estimated from the jobs ahead of it
(engines/scheduler.py)."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from engines import Engine, EngineWorker
from engines.scheduler import DeadlineScheduler


class Gated(Engine[str, str]):
    """Records what it ran; the first call waits for the gate, so others queue meanwhile."""

    name = "gated"

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.gate = threading.Event()
        self.started = threading.Event()

    def load(self) -> None:
        pass

    def run_batch(self, items: Sequence[str]) -> list[str]:
        self.started.set()
        self.gate.wait(5)
        if items[0] == "boom":
            raise RuntimeError("this one fails")
        self.ran.extend(items)
        return [x.upper() for x in items]


async def _scheduler() -> tuple[DeadlineScheduler[str, str], Gated]:
    engine = Gated()
    worker: EngineWorker[str, str] = EngineWorker(engine)
    await worker.start()
    clock = [100.0]
    sched: DeadlineScheduler[str, str] = DeadlineScheduler(worker, clock=lambda: clock[0],
                                                           kind_of=lambda items: items[0][:4])
    return sched, engine


def test_queued_jobs_run_earliest_deadline_first_and_failures_stay_with_their_caller() -> None:
    async def scenario() -> tuple[list[str], list[Any], Gated]:
        sched, engine = await _scheduler()
        busy = asyncio.ensure_future(sched.run(["busy"], deadline=0.0))
        await asyncio.to_thread(engine.started.wait, 5)  # the engine is inside its first job
        later = asyncio.ensure_future(sched.run(["more-in-3s"], deadline=103.0))
        gone = asyncio.ensure_future(sched.run(["gone"], deadline=100.5))
        boom = asyncio.ensure_future(sched.run(["boom"], deadline=100.2))
        now = asyncio.ensure_future(sched.run(["first-words"], deadline=100.0))
        soon = asyncio.ensure_future(sched.run(["more-in-1s"], deadline=101.0))
        await asyncio.sleep(0)
        gone.cancel()  # its session went away while it waited
        engine.gate.set()
        results = await asyncio.gather(busy, now, soon, later, boom, return_exceptions=True)
        await sched.close()
        return engine.ran, results, engine

    ran, results, _ = asyncio.run(scenario())
    assert ran == ["busy", "first-words", "more-in-1s", "more-in-3s"], ran  # boom failed, gone skipped
    assert results[:4] == [["BUSY"], ["FIRST-WORDS"], ["MORE-IN-1S"], ["MORE-IN-3S"]]
    assert isinstance(results[4], RuntimeError)


def test_the_backlog_counts_the_job_in_flight_and_the_queued_jobs_due_before() -> None:
    async def scenario() -> tuple[float, float, float]:
        sched, engine = await _scheduler()
        engine.gate.set()
        await sched.run(["more-x"])  # teaches the scheduler what a "more" job costs
        await sched.run(["star-x"])
        engine.gate.clear()
        engine.started.clear()
        sched._cost = {"more": 0.2, "star": 0.05}  # known costs, so the sum is exact
        busy = asyncio.ensure_future(sched.run(["more-busy"], deadline=0.0))
        await asyncio.to_thread(engine.started.wait, 5)
        queued = [asyncio.ensure_future(sched.run(["more-a"], deadline=100.5)),
                  asyncio.ensure_future(sched.run(["star-b"], deadline=99.0)),
                  asyncio.ensure_future(sched.run(["more-c"], deadline=110.0))]
        await asyncio.sleep(0)
        now, in_5s, in_20s = sched.backlog(100.0), sched.backlog(105.0), sched.backlog(120.0)
        engine.gate.set()
        await asyncio.gather(busy, *queued)
        await sched.close()
        return now, in_5s, in_20s

    now, in_5s, in_20s = asyncio.run(scenario())
    # in flight (0.2, just started) + star-b (0.05); then more-a (0.2); then more-c (0.2)
    assert now == pytest.approx(0.25, abs=0.02) and in_5s == pytest.approx(0.45, abs=0.02)
    assert in_20s == pytest.approx(0.65, abs=0.02)


def test_a_start_lane_speaks_first_words_while_the_general_lane_is_busy() -> None:
    """The piper backend's second engine takes only sentence starts: a reply's first words do
    not wait behind another session's long piece, and when that lane is busy the general one
    takes starts too."""
    async def scenario() -> tuple[list[str], list[str], list[str], float, float]:
        general, starts = Gated(), Gated()
        w1: EngineWorker[str, str] = EngineWorker(general)
        w2: EngineWorker[str, str] = EngineWorker(starts)
        await asyncio.gather(w1.start(), w2.start())
        clock = [100.0]
        sched: DeadlineScheduler[str, str] = DeadlineScheduler(
            w1, lanes=[(w2, {"star"})], clock=lambda: clock[0], kind_of=lambda items: items[0][:4])
        starts.gate.set()
        sched._cost = {"more": 0.3, "star": 0.05}
        busy = asyncio.ensure_future(sched.run(["more-long"], deadline=0.0))
        await asyncio.to_thread(general.started.wait, 5)  # the general lane is inside a long piece
        queued = asyncio.ensure_future(sched.run(["more-next"], deadline=100.5))
        first = await asyncio.wait_for(sched.run(["star-reply"], deadline=100.0), 5)  # not held up
        early = list(general.ran)
        start_wait, more_wait = sched.backlog(100.0, kind="star"), sched.backlog(101.0, kind="more")
        # now the start lane is blocked and the general one free: a start goes to the general lane
        starts.gate.clear()
        starts.started.clear()
        general.gate.set()
        await asyncio.gather(busy, queued)
        blocker = asyncio.ensure_future(sched.run(["star-blocker"], deadline=100.0))
        await asyncio.to_thread(starts.started.wait, 5)
        second = await asyncio.wait_for(sched.run(["star-other"], deadline=100.0), 5)
        starts.gate.set()
        await blocker
        await sched.close()
        assert first == ["STAR-REPLY"] and second == ["STAR-OTHER"]
        return early, general.ran, starts.ran, start_wait, more_wait

    early, general_ran, start_ran, start_wait, more_wait = asyncio.run(scenario())
    assert early == [], early  # the reply came while the long piece was still running
    assert start_ran == ["star-reply", "star-blocker"], start_ran
    assert general_ran == ["more-long", "more-next", "star-other"], general_ran
    # a start waits for nothing on its own lane; a piece waits for the one in flight and the queued one
    assert start_wait == pytest.approx(0.0, abs=0.01) and more_wait == pytest.approx(0.6, abs=0.02)
