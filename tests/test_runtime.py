"""Claim: the runtime applies each late-frame policy as documented (drop, repeat last, block),
counts every deadline miss, ends only the failing session and leaves no task behind.
Under a fake clock: a live source emits a frame every 40 ms; a stage that takes 60 ms per
frame falls behind; the policy on the channel decides what the sink sees."""
from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

import pytest

from realtime import (Event, FakeClock, Frame, Graph, LatePolicy, MapStage, RuntimeMetrics,
                      Session, SessionFailed, Stage, StageContext, VideoFrame)

TB = Fraction(1, 25)  # 40 ms ticks


class Ticker(Stage):
    """A live source: frame k is released at media time k * 40 ms, paced by the clock."""

    inputs = ()

    def __init__(self, name: str, n: int) -> None:
        super().__init__(name)
        self.n = n

    async def run(self, ctx: StageContext) -> None:
        for k in range(self.n):
            t = float(k * TB)
            if ctx.paced:
                await ctx.clock.sleep_until(ctx.media_clock.origin + t)
            await ctx.output().put(VideoFrame(pts=k, time_base=TB, image=k, **ctx.stamp(t)))


class Slow(MapStage):
    def __init__(self, name: str, cost_s: float, fail_at: int | None = None) -> None:
        super().__init__(name, budget_s=0.040)
        self.cost_s, self.fail_at = cost_s, fail_at

    async def process(self, frame: Any, ctx: StageContext):
        if frame.pts == self.fail_at:
            raise RuntimeError("boom")
        await ctx.clock.sleep_until(ctx.clock.now() + self.cost_s)
        yield frame


class Collect(Stage):
    outputs = ()

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.got: list[tuple[float, Frame]] = []

    async def run(self, ctx: StageContext) -> None:
        async for f in ctx.input():
            self.got.append((ctx.clock.now(), f))


def build(n: int, policy_in: LatePolicy, policy_out: LatePolicy, cost_s: float = 0.060,
          fail_at: int | None = None) -> tuple[Graph, Collect]:
    g = Graph("test", latency_budget_s=0.100)
    sink = Collect("sink")
    g.add(Ticker("src", n), Slow("slow", cost_s, fail_at), sink)
    g.link("src.out", "slow.in", capacity=64, policy=policy_in)
    g.link("slow.out", "sink.in", capacity=64, policy=policy_out)
    return g, sink


async def run_fake(session: Session, clock: FakeClock) -> None:
    task = asyncio.ensure_future(session.run())
    await clock.run_until(task, step=0.005)
    await task


def test_drop_policy_skips_late_frames_and_counts_them() -> None:
    async def main() -> None:
        clock, metrics = FakeClock(), RuntimeMetrics()
        g, sink = build(50, LatePolicy.DROP, LatePolicy.BLOCK)
        s = Session(g, clock=clock, metrics=metrics)
        await run_fake(s, clock)
        got = [f.pts for _, f in sink.got]
        dropped = s.channels["src.out->slow.in"].stats.dropped.get("late", 0)
        assert got == sorted(got) and len(set(got)) == len(got)
        assert dropped > 0 and len(got) + dropped == 50
        # Dropping lets the slow stage catch up: nothing reaches the sink more than one
        # processing time past its deadline, whereas without dropping the lag would grow.
        assert all(t <= f.deadline + 0.060 + 1e-9 for t, f in sink.got)
        assert metrics.value("avatar_frames_dropped_total", graph="test",
                             channel="src.out->slow.in", reason="late") == dropped
        assert metrics.value("avatar_stage_budget_exceeded_total", graph="test", stage="slow") == len(got)
    asyncio.run(main())


def test_repeat_last_keeps_every_timestamp_and_repeats_payloads() -> None:
    async def main() -> None:
        clock = FakeClock()
        g, sink = build(30, LatePolicy.BLOCK, LatePolicy.REPEAT_LAST)
        s = Session(g, clock=clock)
        await run_fake(s, clock)
        ch = s.channels["slow.out->sink.in"]
        assert [f.pts for _, f in sink.got] == list(range(30))  # constant frame rate kept
        repeated = [f for _, f in sink.got if f.image != f.pts]
        assert len(repeated) == ch.stats.repeated > 0
        assert all(f.image < f.pts for f in repeated)  # payload of an earlier frame
        assert ch.stats.late == ch.stats.repeated
    asyncio.run(main())


def test_block_policy_delivers_every_late_frame_and_counts_misses() -> None:
    async def main() -> None:
        clock, metrics = FakeClock(), RuntimeMetrics()
        g, sink = build(30, LatePolicy.BLOCK, LatePolicy.BLOCK)
        s = Session(g, clock=clock, metrics=metrics)
        await run_fake(s, clock)
        assert [(f.pts, f.image) for _, f in sink.got] == [(k, k) for k in range(30)]
        late = sum(1 for t, f in sink.got if t > f.deadline)
        assert late > 0
        assert metrics.value("avatar_deadline_misses_total", graph="test",
                             channel="slow.out->sink.in", policy="block") == late
        assert not any(ch.stats.dropped for ch in s.channels.values())
    asyncio.run(main())


def test_unpaced_run_has_no_deadlines() -> None:
    async def main() -> None:
        clock = FakeClock()
        g, sink = build(20, LatePolicy.DROP, LatePolicy.DROP)
        s = Session(g, clock=clock, paced=False)
        await run_fake(s, clock)
        assert [f.pts for _, f in sink.got] == list(range(20))
        assert all(ch.stats.late == 0 for ch in s.channels.values())
    asyncio.run(main())


def test_failing_stage_ends_only_its_session() -> None:
    async def main() -> None:
        clock = FakeClock()
        bad_graph, _ = build(20, LatePolicy.BLOCK, LatePolicy.BLOCK, cost_s=0.01, fail_at=5)
        good_graph, good_sink = build(20, LatePolicy.BLOCK, LatePolicy.BLOCK, cost_s=0.01)
        events: list[Event] = []
        bad = Session(bad_graph, clock=clock, on_event=events.append)
        good = Session(good_graph, clock=clock)
        both = asyncio.gather(bad.run(), good.run(), return_exceptions=True)
        await clock.run_until(both, step=0.005)
        bad_result, good_result = await both
        assert isinstance(bad_result, SessionFailed) and bad_result.stage == "slow"
        assert good_result is None and [f.pts for _, f in good_sink.got] == list(range(20))
        errors = [e for e in events if e.kind == "error"]
        assert len(errors) == 1 and errors[0].data["stage"] == "slow" and "boom" in errors[0].data["message"]
        assert asyncio.all_tasks() == {asyncio.current_task()}
    asyncio.run(main())


def test_cancelled_session_leaves_no_task_and_tears_down() -> None:
    torn: list[str] = []

    class Tracked(Collect):
        async def teardown(self) -> None:
            torn.append(self.name)

    async def main() -> None:
        clock = FakeClock()
        g = Graph("test", latency_budget_s=0.1)
        g.add(Ticker("src", 10_000), Slow("slow", 0.01), Tracked("sink"))
        g.link("src.out", "slow.in", capacity=4, policy=LatePolicy.BLOCK)
        g.link("slow.out", "sink.in", capacity=4, policy=LatePolicy.BLOCK)
        s = Session(g, clock=clock)
        task = asyncio.ensure_future(s.run())
        await clock.advance(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert torn == ["sink"]
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert all(ch.closed for ch in s.channels.values())
    asyncio.run(main())


def test_interrupt_drops_stale_frames() -> None:
    async def main() -> None:
        clock = FakeClock()
        g, sink = build(40, LatePolicy.BLOCK, LatePolicy.BLOCK, cost_s=0.01)
        s = Session(g, clock=clock, paced=True)
        task = asyncio.ensure_future(s.run())
        await clock.advance(0.5)
        before = len(sink.got)
        s.interrupt()
        await clock.run_until(task, step=0.005)
        await task
        after = [f for _, f in sink.got[before:]]
        assert after and all(f.epoch == 1 for f in after)  # nothing of epoch 0 after the interrupt
    asyncio.run(main())


def test_graph_definition_errors_are_clear() -> None:
    from realtime import GraphError
    g = Graph("x")
    g.add(Ticker("src", 1), Collect("sink"))
    with pytest.raises(GraphError, match="no output port 'audio'"):
        g.link("src.audio", "sink.in", capacity=1, policy=LatePolicy.BLOCK)
    with pytest.raises(GraphError, match="linked 0 times"):
        Session(g)
