"""Cross-session batching of the shared renderer: requests that queue while the engine is busy
share its next call; a lone request never waits; one caller's cancellation or an engine
failure reaches exactly the callers concerned."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from engines import Engine, EngineWorker
from engines.batcher import BatchingWorker


class Slow(Engine[int, int]):
    name = "slow"

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = threading.Event()

    def load(self) -> None:
        pass

    def run_batch(self, items: Sequence[int]) -> list[int]:
        self.calls.append(list(items))
        self.gate.wait(5)
        if -1 in items:
            raise RuntimeError("bad item")
        return [x * 10 for x in items]


def test_requests_queued_while_busy_run_together() -> None:
    async def scenario() -> tuple[list[list[int]], list[list[int]]]:
        engine = Slow()
        batcher = BatchingWorker(EngineWorker(engine), max_batch=3)
        await batcher.worker.start()
        first = asyncio.create_task(batcher.run([1]))  # finds the engine idle: runs alone
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.run([x])) for x in (2, 3, 4, 5)]
        await asyncio.sleep(0.05)
        engine.gate.set()
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return engine.calls, results

    calls, results = asyncio.run(scenario())
    assert calls == [[1], [2, 3, 4], [5]]  # oldest first, at most max_batch per call
    assert results == [[10], [20], [30], [40], [50]]


def test_a_cancelled_caller_and_a_failing_call_touch_only_their_own() -> None:
    async def scenario() -> tuple[list[list[int]], list[object]]:
        engine = Slow()
        batcher = BatchingWorker(EngineWorker(engine), max_batch=8)
        await batcher.worker.start()
        busy = asyncio.create_task(batcher.run([0]))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.run([7]))
        bad = asyncio.create_task(batcher.run([-1]))
        await asyncio.sleep(0.01)
        gone.cancel()  # its session closed while it waited
        engine.gate.set()
        out = await asyncio.gather(busy, bad, return_exceptions=True)
        after = await batcher.run([4])  # the batcher goes on after a failed call
        await batcher.close()
        return engine.calls, [*out, after]

    calls, (busy, bad, after) = asyncio.run(scenario())
    assert calls == [[0], [-1], [4]]  # the cancelled request never reached the engine
    assert busy == [0] and after == [40]
    assert isinstance(bad, RuntimeError)


def test_close_cancels_waiting_callers() -> None:
    async def scenario() -> None:
        engine = Slow()
        batcher = BatchingWorker(EngineWorker(engine))
        await batcher.worker.start()
        running = asyncio.create_task(batcher.run([1]))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(batcher.run([2]))
        await asyncio.sleep(0.01)
        engine.gate.set()
        await batcher.close()
        for caller in (running, waiting):
            with pytest.raises(asyncio.CancelledError):
                await caller

    asyncio.run(scenario())


def test_replicas_take_requests_while_the_first_worker_is_busy() -> None:
    """Two copies of an engine on two threads: a request that finds one busy goes to the
    other at once (in parallel), and with both busy, the queue goes to whichever is free."""
    async def scenario() -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
        a, b = Slow(), Slow()
        batcher = BatchingWorker(EngineWorker(a), max_batch=8, replicas=[EngineWorker(b)])
        for w in batcher.workers:
            await w.start()
        first = asyncio.create_task(batcher.run([1]))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(batcher.run([2]))  # a is busy: b takes it now
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(batcher.run([x])) for x in (3, 4)]
        await asyncio.sleep(0.05)
        assert (a.calls, b.calls) == ([[1]], [[2]])  # both running, 3 and 4 waiting
        b.gate.set()
        results = await asyncio.gather(second, *queued)
        a.gate.set()
        results.insert(0, await first)
        await batcher.close()
        return a.calls, b.calls, results

    a_calls, b_calls, results = asyncio.run(scenario())
    assert a_calls == [[1]] and b_calls == [[2], [3, 4]]
    assert results == [[10], [20], [30], [40]]
