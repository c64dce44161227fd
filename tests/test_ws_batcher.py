"""Claim: the shared renderer's batcher runs a request that finds the engine idle at once and
alone, runs the requests that queue while a call is in flight together in the next call
(oldest first, at most max_batch items), lets one caller's cancellation or a failing call
reach only the callers concerned, cancels waiting callers on close, and hands requests to an
idle replica while the first worker is busy. The fake engine blocks on an event the test
opens, so every step is synchronised on events, never on elapsed time."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from engines import Engine, EngineWorker
from engines.batcher import BatchingWorker

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


async def enqueue(batcher: BatchingWorker, *values: int) -> list[asyncio.Task]:
    """One request per value, each in its own task, and returns once all are in the queue:
    a task runs `BatchingWorker.run` up to its first await (the request queued) on its first
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
        batcher = BatchingWorker(EngineWorker(engine), max_batch=3)
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
        batcher = BatchingWorker(EngineWorker(engine), max_batch=1)
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
        batcher = BatchingWorker(EngineWorker(engine))
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
        batcher = BatchingWorker(EngineWorker(a), max_batch=8, replicas=[EngineWorker(b)])
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
