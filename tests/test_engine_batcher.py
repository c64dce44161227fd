"""Claim: the engine batcher (engines/batcher.py) runs a request that finds the engine idle at
once and alone (by default), runs the requests that queue while a call is in flight together
in the next call (earliest deadline first, each session's in order, at most max_batch items),
lets one caller's cancellation or bad input reach only that caller, cancels waiting callers
on close, hands requests to an idle replica while the first worker is busy, and with a
max_delay_s holds a batch open for more requests but not past a deadline. The fake engine
blocks on an event the test opens, so the steps are synchronised on events; only the
holding test measures elapsed time, with generous bounds."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from engines import Engine, EngineWorker
from engines.batcher import Batcher, BatchPolicy

WAIT_S = 5.0  # a safety bound only: every wait below returns as soon as its event is set


class Gated(Engine[int, int]):
    """Records each batch it is given, says so (`entered`), then blocks until `gate` opens."""

    name = "gated"

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def load(self) -> None:
        pass

    def run_batch(self, items: Sequence[int]) -> list[int]:
        self.calls.append(list(items))
        self.entered.set()
        if not self.gate.wait(WAIT_S):
            raise TimeoutError("the test never opened the gate")
        if -1 in items:
            raise RuntimeError("bad item")
        return [x * 10 for x in items]


async def engine_started(engine: Gated) -> None:
    """Until the engine is inside a call (its thread set `entered`)."""
    assert await asyncio.to_thread(engine.entered.wait, WAIT_S), "the engine was never called"


async def enqueue(batcher: Batcher, *values: int) -> list[asyncio.Task]:
    """One request per value, each in its own task, and returns once all are in the queue:
    a task runs `Batcher.run` up to its first await (the request queued) on its first
    step, and every task created here takes that step in the loop turn we yield to."""
    tasks = [asyncio.create_task(batcher.run([v])) for v in values]
    await asyncio.sleep(0)  # one turn of the loop, not a wait on time
    return tasks


async def finished(task: asyncio.Future) -> asyncio.Future:
    done, _ = await asyncio.wait({task}, timeout=WAIT_S)
    assert task in done, "the caller was never answered"
    return task


def test_requests_queued_while_busy_run_together() -> None:
    async def scenario() -> tuple[list[list[int]], list[list[int]]]:
        engine = Gated()
        batcher = Batcher(EngineWorker(engine), BatchPolicy(max_batch=3))
        await batcher.worker.start()
        [first] = await enqueue(batcher, 1)  # finds the engine idle: runs at once, alone
        await engine_started(engine)
        assert engine.calls == [[1]]
        rest = await enqueue(batcher, 2, 3, 4, 5)  # queued while [1] is in flight
        assert engine.calls == [[1]]
        engine.gate.set()
        results = await asyncio.wait_for(asyncio.gather(first, *rest), WAIT_S)
        await batcher.close()
        return engine.calls, results

    calls, results = asyncio.run(scenario())
    assert calls == [[1], [2, 3, 4], [5]]  # oldest first, at most max_batch per call
    assert results == [[10], [20], [30], [40], [50]]


def test_a_cancelled_caller_and_a_failing_call_touch_only_their_own() -> None:
    """max_batch=1, so each request is a call of its own: the cancelled one is skipped, the
    failing call fails its caller only, and the request queued behind it is still served."""
    async def scenario() -> tuple[list[list[int]], list[object]]:
        engine = Gated()
        batcher = Batcher(EngineWorker(engine), BatchPolicy(max_batch=1))
        await batcher.worker.start()
        [busy] = await enqueue(batcher, 0)
        await engine_started(engine)
        gone, bad, good = await enqueue(batcher, 7, -1, 8)  # all wait behind [0]
        gone.cancel()  # its session closed while it waited
        with pytest.raises(asyncio.CancelledError):
            await gone
        engine.gate.set()
        out = await asyncio.wait_for(asyncio.gather(busy, bad, good, return_exceptions=True), WAIT_S)
        after = await asyncio.wait_for(batcher.run([4]), WAIT_S)  # the batcher goes on
        await batcher.close()
        return engine.calls, [*out, after]

    calls, (busy, bad, good, after) = asyncio.run(scenario())
    assert calls == [[0], [-1], [8], [4]]  # the cancelled request never reached the engine
    assert busy == [0] and good == [80] and after == [40]
    assert isinstance(bad, RuntimeError) and str(bad) == "bad item"


def test_close_cancels_waiting_callers() -> None:
    """close() while the engine is still inside a call: the caller whose call is in flight
    and the one waiting behind it are both cancelled, before the engine returns."""
    async def scenario() -> None:
        engine = Gated()
        batcher = Batcher(EngineWorker(engine))
        await batcher.worker.start()
        [running] = await enqueue(batcher, 1)
        await engine_started(engine)
        [waiting] = await enqueue(batcher, 2)
        closing = asyncio.create_task(batcher.close())
        for caller in (running, waiting):
            assert (await finished(caller)).cancelled()
        assert not closing.done()  # it waits for the engine's thread to finish its call
        engine.gate.set()
        await asyncio.wait_for(closing, WAIT_S)
        assert engine.calls == [[1]]  # the waiting request never reached the engine

    asyncio.run(scenario())


def test_replicas_take_requests_while_the_first_worker_is_busy() -> None:
    """Two copies of an engine on two threads: a request that finds one busy goes to the
    other at once (in parallel), and with both busy, the queue goes to whichever is free."""
    async def scenario() -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
        a, b = Gated(), Gated()
        batcher = Batcher(EngineWorker(a), BatchPolicy(max_batch=8), replicas=[EngineWorker(b)])
        for w in batcher.workers:
            await w.start()
        [first] = await enqueue(batcher, 1)
        await engine_started(a)
        [second] = await enqueue(batcher, 2)  # a is busy: b takes it now
        await engine_started(b)
        queued = await enqueue(batcher, 3, 4)
        assert (a.calls, b.calls) == ([[1]], [[2]])  # both running, 3 and 4 waiting
        b.gate.set()
        results = await asyncio.wait_for(asyncio.gather(second, *queued), WAIT_S)
        assert not first.done()  # a is still in its call: b served the queue
        a.gate.set()
        results.insert(0, await asyncio.wait_for(first, WAIT_S))
        await batcher.close()
        return a.calls, b.calls, results

    a_calls, b_calls, results = asyncio.run(scenario())
    assert a_calls == [[1]] and b_calls == [[2], [3, 4]]
    assert results == [[10], [20], [30], [40]]


def test_a_failing_batch_fails_only_the_request_that_causes_it() -> None:
    """Three sessions' requests in one call, one of them bad: the call fails, each request is
    run again alone, and only the bad one's caller gets the error."""
    async def scenario() -> tuple[list[list[int]], list[object], int]:
        engine = Gated()
        batcher = Batcher(EngineWorker(engine), BatchPolicy(max_batch=8))
        await batcher.worker.start()
        [busy] = await enqueue(batcher, 1)
        await engine_started(engine)
        waiting = await enqueue(batcher, 2, -1, 3)  # queued together behind [1]
        engine.gate.set()
        out = await asyncio.wait_for(asyncio.gather(busy, *waiting, return_exceptions=True), WAIT_S)
        await batcher.close()
        return engine.calls, out, batcher.stats.isolated

    calls, (busy, two, bad, three), isolated = asyncio.run(scenario())
    assert calls == [[1], [2, -1, 3], [2], [-1], [3]]
    assert busy == [10] and two == [20] and three == [30]
    assert isinstance(bad, RuntimeError) and isolated == 1


def test_earliest_deadline_first_and_each_sessions_order_kept() -> None:
    """Queued behind a call in flight (one item per call): B's frame due in 0.1 s goes before
    C's due in 0.5 s; A's second frame is due first of all, so A's first (due later) is taken
    just before it — a session's requests never overtake each other."""
    async def scenario() -> list[list[int]]:
        engine = Gated()
        batcher = Batcher(EngineWorker(engine), BatchPolicy(max_batch=1))
        await batcher.worker.start()
        busy = asyncio.create_task(batcher.run([0]))
        await engine_started(engine)
        plan = [(11, 1.0, "A"), (21, 0.1, "B"), (12, 0.05, "A"), (31, 0.5, "C")]
        tasks = [asyncio.create_task(batcher.run([v], slack_s=s, session=k)) for v, s, k in plan]
        await asyncio.sleep(0)
        engine.gate.set()
        await asyncio.wait_for(asyncio.gather(busy, *tasks), WAIT_S)
        await batcher.close()
        return engine.calls

    assert asyncio.run(scenario()) == [[0], [11], [12], [21], [31]]


def test_a_batch_is_held_open_for_others_but_never_past_a_deadline() -> None:
    """With max_delay_s, a request that finds the engine idle waits for others to join it (here
    two more, 20 ms later: one call of three, run as soon as it is full); a request due sooner than the delay is not
    held past its deadline less the measured call time (it runs alone, long before the 5 s
    delay). Queue and compute times are reported apart."""
    async def scenario() -> tuple[list[list[int]], list[list[int]], float, list[float], list[float]]:
        queued: list[float] = []
        computed: list[float] = []
        engine = Gated()
        engine.gate.set()
        batcher = Batcher(EngineWorker(engine), BatchPolicy(max_batch=3, max_delay_s=0.5),
                          on_queue=queued.append, on_compute=computed.append)
        await batcher.worker.start()
        first = asyncio.create_task(batcher.run([1], slack_s=2.0))
        await asyncio.sleep(0.02)
        more = [asyncio.create_task(batcher.run([v], slack_s=2.0)) for v in (2, 3)]
        await asyncio.wait_for(asyncio.gather(first, *more), WAIT_S)
        held = list(engine.calls)
        engine.calls.clear()

        urgent = Batcher(EngineWorker(engine), BatchPolicy(max_batch=4, max_delay_s=5.0))
        await urgent.worker.start()
        t0 = time.monotonic()
        await asyncio.wait_for(urgent.run([7], slack_s=0.05), WAIT_S)
        took = time.monotonic() - t0
        await batcher.close()
        await urgent.close()
        return held, engine.calls, took, queued, computed

    held, urgent_calls, took, queued, computed = asyncio.run(scenario())
    assert held == [[1, 2, 3]]  # one call: the first waited for the other two
    assert urgent_calls == [[7]] and took < 1.0, took  # not held the 5 s max_delay_s
    assert len(queued) == 3 and 0.015 <= max(queued) <= 0.3, queued  # the first waited ~20 ms, not 0.5 s
    assert len(computed) == 1
