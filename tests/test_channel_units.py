"""Claim: a full DROP or REPEAT_LAST channel that is offered a frame drops its oldest one and
counts it as "overflow" (channel stats and avatar_frames_dropped_total), a full BLOCK channel
refuses with ChannelFull, and frames of an older epoch than the session's are dropped and
counted as "stale_epoch" whatever the policy (docs/runtime.md, "Channels")."""
from __future__ import annotations

import asyncio
import math
from fractions import Fraction

import pytest

from realtime import Channel, ChannelFull, FakeClock, LatePolicy, RuntimeMetrics, SegmentEnd, VideoFrame

TB = Fraction(1, 25)
GRAPH, NAME = "unit", "src.out->sink.in"


def frame(pts: int, *, epoch: int = 0, deadline: float = math.inf) -> VideoFrame:
    return VideoFrame(pts=pts, time_base=TB, image=pts, deadline=deadline, epoch=epoch)


def channel(policy: LatePolicy, capacity: int, metrics: RuntimeMetrics, clock: FakeClock,
            epoch=lambda: 0) -> Channel:
    return Channel(NAME, capacity=capacity, policy=policy, clock=clock, epoch=epoch,
                   metrics=metrics, graph=GRAPH)


def dropped(metrics: RuntimeMetrics, reason: str) -> float:
    return metrics.value("avatar_frames_dropped_total", graph=GRAPH, channel=NAME, reason=reason)


def drain(ch: Channel) -> list[object]:
    out = []
    while (item := ch.try_get()) is not None:
        out.append(item)
    return out


@pytest.mark.parametrize("policy", [LatePolicy.DROP, LatePolicy.REPEAT_LAST])
def test_offer_to_a_full_channel_drops_the_oldest_as_overflow(policy: LatePolicy) -> None:
    metrics, clock = RuntimeMetrics(), FakeClock()
    ch = channel(policy, 3, metrics, clock)
    for k in range(3):
        ch.offer(frame(k))
    assert dropped(metrics, "overflow") == 0 and ch.stats.dropped == {}
    ch.offer(frame(3))  # full: frame 0 goes
    ch.offer(frame(4))  # full: frame 1 goes
    assert ch.qsize() == 3
    assert metrics.value("avatar_channel_queue_depth", graph=GRAPH, channel=NAME) == 3
    assert ch.stats.dropped == {"overflow": 2}
    assert dropped(metrics, "overflow") == 2
    got = drain(ch)
    assert [(f.pts, f.image) for f in got] == [(2, 2), (3, 3), (4, 4)]  # the newest kept, in order
    assert dropped(metrics, "late") == 0 and dropped(metrics, "stale_epoch") == 0


def test_offer_overflow_drops_the_oldest_frame_never_a_marker() -> None:
    """A segment end at the head of a full channel stays: the frame behind it goes."""
    metrics, clock = RuntimeMetrics(), FakeClock()
    ch = channel(LatePolicy.DROP, 3, metrics, clock)
    ch.offer(SegmentEnd("s0", epoch=0))
    ch.offer(frame(1))
    ch.offer(frame(2))
    ch.offer(frame(3))  # full: frame 1 goes, not the marker
    got = drain(ch)
    assert got[0] == SegmentEnd("s0", epoch=0)
    assert [f.pts for f in got[1:]] == [2, 3]
    assert dropped(metrics, "overflow") == 1


def test_offer_to_a_full_block_channel_raises_channel_full_and_keeps_its_frames() -> None:
    metrics, clock = RuntimeMetrics(), FakeClock()
    ch = channel(LatePolicy.BLOCK, 2, metrics, clock)
    ch.offer(frame(0))
    ch.offer(frame(1))
    with pytest.raises(ChannelFull):
        ch.offer(frame(2))
    assert ch.stats.dropped == {} and dropped(metrics, "overflow") == 0
    assert ch.try_get().pts == 0
    ch.offer(frame(3))  # room again: accepted
    assert [f.pts for f in drain(ch)] == [1, 3]


@pytest.mark.parametrize("policy", list(LatePolicy))
def test_frames_of_an_older_epoch_are_dropped_as_stale_whatever_the_policy(policy: LatePolicy) -> None:
    async def main() -> None:
        metrics, clock = RuntimeMetrics(), FakeClock(start=10.0)
        session_epoch = 0
        ch = channel(policy, 16, metrics, clock, epoch=lambda: session_epoch)
        await ch.put(frame(0))
        assert (await ch.get()).pts == 0  # delivered: a last frame REPEAT_LAST could repeat
        for k in (1, 2):
            await ch.put(frame(k, epoch=0))
        await ch.put(frame(3, epoch=0, deadline=5.0))  # stale and late: counted as stale only
        await ch.put(SegmentEnd("s0", epoch=0))  # a marker is never dropped
        session_epoch = 1  # the session was interrupted
        await ch.put(frame(4, epoch=1))
        await ch.put(frame(5, epoch=2))  # newer than the session's: not stale
        ch.close()
        got = [item async for item in ch]
        assert got[0] == SegmentEnd("s0", epoch=0)
        assert [(f.pts, f.image, f.epoch) for f in got[1:]] == [(4, 4, 1), (5, 5, 2)]
        assert ch.stats.dropped == {"stale_epoch": 3}
        assert dropped(metrics, "stale_epoch") == 3
        assert dropped(metrics, "late") == 0 and ch.stats.late == 0 and ch.stats.repeated == 0
    asyncio.run(main())
