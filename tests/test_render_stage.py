"""Claim: a session keeps up with a shared renderer that takes longer than a frame period per
call when two engine calls are in flight (frames in order, none late), and falls behind with
one. Under the fake clock, so the figures are exact."""
from __future__ import annotations

import asyncio
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_runtime import Collect, run_fake  # noqa: E402

from pipelines.motion.params import N_PARAMS, MotionFrame
from pipelines.render.stage import Render
from realtime import FakeClock, Graph, LatePolicy, RuntimeMetrics, Session, Stage, StageContext

TB = Fraction(1, 25)


class Motion(Stage):
    """Frame k at media time k * 40 ms, emitted on time; params[0] = k."""

    inputs = ()

    def __init__(self, name: str, n: int) -> None:
        super().__init__(name)
        self.n = n

    async def run(self, ctx: StageContext) -> None:
        for k in range(self.n):
            t = float(k * TB)
            await ctx.clock.sleep_until(ctx.media_clock.origin + t)
            p = np.zeros(N_PARAMS, np.float32)
            p[0] = k
            await ctx.output().put(MotionFrame(pts=k, time_base=TB, params=p, **ctx.stamp(t)))


class SlowRenderer:
    """60 ms per call whatever its size (a renderer shared by many sessions); counts overlap."""

    def __init__(self, clock: FakeClock, cost_s: float = 0.060, fail_at: int | None = None) -> None:
        self.clock, self.cost_s, self.fail_at = clock, cost_s, fail_at
        self.running = self.peak = 0

    async def run(self, items: list[dict[str, Any]]) -> list[torch.Tensor]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.clock.sleep_until(self.clock.now() + self.cost_s)
        finally:
            self.running -= 1
        if self.fail_at is not None and any(int(it["params"][0]) == self.fail_at for it in items):
            raise RuntimeError("renderer failed")
        return [torch.full((2, 2), float(it["params"][0])) for it in items]


def _run(in_flight: int, n: int = 50, fail_at: int | None = None) -> tuple[Collect, SlowRenderer, RuntimeMetrics]:
    async def main() -> tuple[Collect, SlowRenderer, RuntimeMetrics]:
        clock, metrics = FakeClock(), RuntimeMetrics()
        renderer = SlowRenderer(clock, fail_at=fail_at)
        g = Graph("test", latency_budget_s=0.100)
        sink = Collect("sink")
        g.add(Motion("motion", n), Render("render", renderer, max_batch=1, in_flight=in_flight), sink)  # type: ignore[arg-type]
        g.link("motion.out", "render.in", capacity=8, policy=LatePolicy.DROP)
        g.link("render.out", "sink.in", capacity=8, policy=LatePolicy.BLOCK)
        await run_fake(Session(g, clock=clock, metrics=metrics), clock)
        return sink, renderer, metrics
    return asyncio.run(main())


def test_two_calls_in_flight_keep_up_with_a_renderer_slower_than_the_frame_period() -> None:
    sink, renderer, metrics = _run(in_flight=2)
    got = [int(f.image[0, 0]) for _, f in sink.got]
    assert got == list(range(50))  # every frame, in order
    assert renderer.peak == 2
    assert all(t <= f.deadline for t, f in sink.got)  # none late
    assert metrics.value("avatar_deadline_misses_total", graph="test", channel="render.out->sink.in",
                         policy="block") == 0


def test_one_call_in_flight_falls_behind_the_same_renderer() -> None:
    sink, renderer, metrics = _run(in_flight=1)
    got = [int(f.image[0, 0]) for _, f in sink.got]
    assert got == sorted(got) and renderer.peak == 1
    late = metrics.value("avatar_frames_dropped_total", graph="test", channel="motion.out->render.in", reason="late")
    assert late > 0 and len(got) + late == 50


def test_a_failing_render_call_fails_the_session_and_leaves_no_task() -> None:
    from realtime import SessionFailed

    async def main() -> int:
        clock = FakeClock()
        g = Graph("test", latency_budget_s=0.100)
        g.add(Motion("motion", 20), Render("render", SlowRenderer(clock, fail_at=7), max_batch=1,  # type: ignore[arg-type]
                                           in_flight=2), Collect("sink"))
        g.link("motion.out", "render.in", capacity=8, policy=LatePolicy.DROP)
        g.link("render.out", "sink.in", capacity=8, policy=LatePolicy.BLOCK)
        with pytest.raises(SessionFailed, match="renderer failed"):
            await run_fake(Session(g, clock=clock), clock)
        await asyncio.sleep(0)
        return len(asyncio.all_tasks())

    assert asyncio.run(main()) == 1  # this one
