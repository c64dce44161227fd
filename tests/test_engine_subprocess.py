"""Claim: the renderer in a child process (server setting `render_processes`) draws the same
frames as in a thread, reports and survives a bad batch, reports a dead process as such
(EngineDied, so the server restarts it), and leaves nothing running after close."""
from __future__ import annotations

import asyncio
import functools

import pytest
import torch

from engines import EngineWorker
from engines.subprocess_engine import SubprocessEngine
from pipelines.motion.params import N_PARAMS
from pipelines.render.avatar import default_avatar
from pipelines.render.engine import renderer_engine


def test_frames_equal_the_threaded_engine_and_errors_are_survived() -> None:
    async def scenario() -> None:
        make = functools.partial(renderer_engine, default_avatar(128), "renderer-test", "cpu")
        engine = SubprocessEngine("renderer-test", make)
        child, local = EngineWorker(engine), EngineWorker(make())
        await child.start()
        await local.start()
        try:
            params = [{"params": torch.rand(N_PARAMS) * 0.6} for _ in range(3)]
            got, want = await child.run(params), await local.run(params)
            assert len(got) == 3 and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
            assert got[0].shape == (192, 128) and got[0].dtype == torch.uint8  # I420 of 128²
            with pytest.raises(RuntimeError, match="renderer-test"):
                await child.run([{"params": torch.zeros(3)}])  # wrong size: the child says why
            # and goes on (against a batch of the same size: batch shape can move a pixel by one)
            assert torch.equal((await child.run(params[:1]))[0], (await local.run(params[:1]))[0])
            proc = engine._proc
            assert proc is not None and proc.poll() is None
        finally:
            await child.close()
            await local.close()
        assert proc.poll() is not None  # the child is gone

    asyncio.run(scenario())


def test_a_killed_child_is_reported_as_dead_and_a_restart_brings_it_back() -> None:
    """What lets the server restart a renderer whose process died (engines/batcher.py)."""
    import os
    import signal

    from engines import EngineDied

    async def scenario() -> None:
        make = functools.partial(renderer_engine, default_avatar(128), "renderer-test", "cpu")
        engine = SubprocessEngine("renderer-test", make)
        worker = EngineWorker(engine)
        await worker.start()
        try:
            params = [{"params": torch.rand(N_PARAMS) * 0.6}]
            want = await worker.run(params)
            pid = engine.pid
            assert pid is not None and engine.alive()
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.3)  # the kernel delivers the signal
            assert not engine.alive()
            with pytest.raises(EngineDied, match="died"):
                await worker.run(params)
            await worker.restart()
            assert engine.pid not in (None, pid) and engine.alive()
            assert torch.equal((await worker.run(params))[0], want[0])  # the same frames again
        finally:
            await worker.close()

    asyncio.run(scenario())


def test_a_factory_that_fails_is_reported() -> None:
    engine = SubprocessEngine("broken", functools.partial(renderer_engine, None, "broken", "cpu"))
    with pytest.raises(RuntimeError, match="failed to load in its process"):
        engine.load()
    assert engine._proc is None


def test_its_cpu_and_memory_are_exported_while_it_runs() -> None:
    """The server's own process_cpu_seconds_total misses a child's work: these count it."""
    from prometheus_client import CollectorRegistry, generate_latest

    from engines.process_stats import EngineProcessCollector

    registry = CollectorRegistry()
    collector = EngineProcessCollector()
    registry.register(collector)

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name, {"engine": "renderer-test", "replica": "0"})

    async def scenario() -> tuple[float, float, float]:
        make = functools.partial(renderer_engine, default_avatar(256), "renderer-test", "cpu")
        engine = SubprocessEngine("renderer-test", make)
        worker = EngineWorker(engine)
        await worker.start()
        collector.add("0", engine)
        try:
            before = sample("avatar_engine_process_cpu_seconds_total")
            for _ in range(20):
                await worker.run([{"params": torch.rand(N_PARAMS) * 0.6} for _ in range(4)])
            after = sample("avatar_engine_process_cpu_seconds_total")
            rss = sample("avatar_engine_process_resident_memory_bytes")
            assert before is not None and after is not None and rss is not None
            assert b"avatar_engine_process_cpu_seconds_total{" in generate_latest(registry)
            return before, after, rss
        finally:
            await worker.close()

    before, after, rss = asyncio.run(scenario())
    assert after - before >= 0.05, (before, after)  # 80 frames of 256² are not free
    assert 50e6 < rss < 4e9, rss  # torch and the avatar are in there
    assert sample("avatar_engine_process_cpu_seconds_total") is None  # closed: it drops out
