"""Claim: a slow reader costs the server a bounded amount — its send queue never holds more than
`send_queue_bytes`, it loses video first and is then closed with 4008 — while another stream
goes on in real time without a dropped frame."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from web.stream import framing
from web.stream.client import MediaPacket, StreamClient
from web.stream.protocol import CloseCode, Stats
from web.stream.sendqueue import SendQueue, SlowConsumer

from web.health import resident_mb
from wsutil import running_server


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_queue(clock: Clock, asked: list[int]) -> SendQueue:
    return SendQueue(max_bytes=10_000, video_bytes=1_000, max_lag_s=5.0, clock=clock,
                     on_need_keyframe=lambda: asked.append(1))


def test_video_is_dropped_until_a_keyframe_then_flagged() -> None:
    clock, asked = Clock(), []
    q = make_queue(clock, asked)
    assert q.push_video(framing.KEYFRAME, 0, 1, b"k" * 600)
    assert q.push_video(0, 1, 1, b"p" * 600)  # 1200 bytes queued now: over video_bytes
    assert not q.push_video(0, 2, 1, b"p" * 10)  # dropped: the queue is over its video limit
    q.push_audio(0, 0, 960, b"a" * 100)  # audio still goes in
    assert not q.push_video(framing.KEYFRAME, 3, 1, b"k" * 10)  # still over the limit
    for _ in range(2):
        asyncio.run(q.get())  # the reader catches up: 100 bytes left
    assert asked == [1]  # recovery: a keyframe was asked for, once
    assert not q.push_video(0, 4, 1, b"p" * 10)  # a P frame after the gap is useless
    assert q.push_video(framing.KEYFRAME, 5, 1, b"k" * 10)
    item = asyncio.run(q.get()), asyncio.run(q.get())
    head, _ = framing.unpack(item[1].data)  # type: ignore[arg-type]
    assert head.pts == 5 and head.discontinuity and head.keyframe
    assert q.stats.video_dropped == 3


def test_audio_and_events_are_kept_until_the_client_is_too_far_behind() -> None:
    clock, asked = Clock(), []
    q = make_queue(clock, asked)
    q.push_event("{}")
    clock.t = 4.9
    q.push_audio(0, 0, 960, b"a" * 100)
    clock.t = 5.1
    with pytest.raises(SlowConsumer, match="behind"):
        q.push_audio(0, 960, 960, b"a" * 100)
    q2 = make_queue(Clock(), [])
    with pytest.raises(SlowConsumer, match="bytes"):
        for i in range(200):
            q2.push_audio(0, i * 960, 960, b"a" * 100)


def rss_mb() -> float:
    mb = resident_mb()  # the server runs in this process
    assert mb is not None, "no VmRSS"
    return mb


@pytest.mark.timeout(180)
def test_a_client_that_stops_reading_is_closed_4008_and_others_stream_on() -> None:
    stall_s = 30.0

    async def scenario() -> dict[str, Any]:
        async with running_server() as server:
            bystander = await StreamClient.connect(server.url)
            # max_queue=1: the client library stops reading the socket once one message waits
            slow = await connect(server.url, max_size=None, max_queue=1, ping_interval=None, compression=None)
            await slow.send(json.dumps({"type": "config"}))
            await slow.recv()  # ready
            await slow.send(json.dumps({"type": "say", "text": "I will not listen to any of this. " * 8}))
            rss: list[float] = []
            queued: list[int] = []  # the slow client's send queue, as the server holds it
            media: list[MediaPacket] = []
            stats: list[Stats] = []

            async def watch_bystander() -> None:
                await bystander.say("Meanwhile I keep talking, and talking. " * 4)
                async for item in bystander:
                    if isinstance(item, MediaPacket) and item.stream == "video":
                        media.append(item)
                    elif isinstance(item, Stats):
                        stats.append(item)

            watcher = asyncio.create_task(watch_bystander())
            t0 = time.monotonic()
            closed_at = None
            while time.monotonic() - t0 < stall_s:  # the slow client reads nothing meanwhile
                rss.append(rss_mb())
                queued += [c.queue.bytes for c in server.state.connections if c.id == "c2"]
                if closed_at is None and not any(c.id != "c1" for c in server.state.connections
                                                 if c.close_code is None):
                    closed_at = time.monotonic() - t0
                await asyncio.sleep(0.5)
            wall = time.monotonic() - t0
            try:  # it reads again: what was in flight, then the close frame
                async with asyncio.timeout(20):
                    while True:
                        await slow.recv()
            except ConnectionClosed:
                pass
            watcher.cancel()
            await bystander.close()
            return {"rss": rss, "queued": queued, "limit": server.state.settings.send_queue_bytes,
                    "code": slow.close_code, "closed_at": closed_at, "media": media,
                    "stats": stats, "wall": wall}

    r = asyncio.run(scenario())
    assert r["code"] == CloseCode.SLOW_CONSUMER
    assert r["closed_at"] is not None and r["closed_at"] < 30.0  # the server gave up on it
    growth = max(r["rss"]) - r["rss"][0]
    print(f"slow reader closed after {r['closed_at']:.1f} s; server RSS growth {growth:.1f} MB")
    # the bound itself: never more than send_queue_bytes (plus the one message that overflows it)
    assert r["queued"] and max(r["queued"]) <= r["limit"] + 256 * 1024, (max(r["queued"]), r["limit"])
    # RSS on the wall clock, generous: +6 MB measured (docs/stream-protocol.md), 25 allowed
    assert growth <= 25.0, f"server memory grew {growth:.1f} MB"
    # the bystander kept real time all along, without a single dropped frame
    v = r["media"]
    assert [p.pts for p in v] == list(range(v[0].pts, v[0].pts + len(v)))
    span = v[-1].received - v[0].received
    assert (v[-1].end - v[0].time) >= 0.97 * span and span >= 0.9 * r["wall"]
    assert r["stats"][-1].video_dropped == 0
