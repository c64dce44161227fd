"""Claim (docs/deploy.md, "Draining"): with `drain_timeout_s` set, SIGTERM drains the server as
a scale-in needs — `/readyz` false at once and new calls refused with 503 + Retry-After, while
the running calls go on undisturbed to their own end; then the process exits 0. And with
`public_url` set, a call's `Location` names this worker absolutely, so follow-up signaling
reaches it behind a load balancer."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import aiohttp

from callutil import CallClient, started_server
from wsutil import running_server

CALL = {"call_size": 256, "sizes": [256], "size": 256, "voice": "en-us"}
LONG = "The avatar keeps talking while its server drains for a scale in. " * 4


async def _connected(call: CallClient) -> None:
    async with asyncio.timeout(15):
        while not (call.channel and call.channel.readyState == "open" and call.got.video):
            await asyncio.sleep(0.05)


def test_sigterm_drains_new_calls_refused_running_calls_finish_then_exit_0() -> None:
    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with started_server(new_session=True, drain_timeout_s=60, shutdown_grace_s=5, **CALL) as server, \
                aiohttp.ClientSession() as http:
            calls = [CallClient(server.http, wav=None, keep_video=False) for _ in range(2)]
            for c in calls:
                assert await c.start() == 201
            await asyncio.gather(*(_connected(c) for c in calls))
            assert (await calls[0].post("say", {"text": LONG}))[0] == 202
            os.killpg(server.proc.pid, signal.SIGTERM)
            t0 = time.monotonic()
            async with asyncio.timeout(5):
                while True:  # "at once": the first poll after the signal is handled
                    async with http.get(f"{server.http}/readyz") as r:
                        if r.status == 503:
                            out["ready"], out["ready_body"] = r.status, await r.json()
                            break
                    await asyncio.sleep(0.02)
            out["ready_after_s"] = time.monotonic() - t0
            async with http.post(f"{server.http}/v1/calls", data="v=0\r\nm=audio 9 UDP 0\r\n",
                                 headers={"Content-Type": "application/sdp"}) as r:
                out["new_call"], out["new_call_body"] = r.status, await r.json()
                out["retry_after"] = r.headers.get("Retry-After")
            frames_before = [len(c.got.video) for c in calls]
            await asyncio.sleep(3.0)
            out["frames_during"] = [len(c.got.video) - n for c, n in zip(calls, frames_before)]
            out["alive_during"] = server.proc.poll() is None
            out["ended_events"] = [e for c in calls for e in c.got.events if e.get("kind") == "ended"]
            out["spoken"] = [e for e in calls[0].got.events if e.get("kind") in ("utterance_started", "started")]
            out["delete_first"] = await calls[0].close()
            await asyncio.sleep(1.0)
            out["alive_with_one"] = server.proc.poll() is None
            out["delete_second"] = await calls[1].close()
            t1 = time.monotonic()
            while server.proc.poll() is None and time.monotonic() - t1 < 15:
                await asyncio.sleep(0.05)
            out["exit"], out["exit_after_s"] = server.proc.poll(), time.monotonic() - t1
            out["log"] = server.log[-8:]
        return out

    out = asyncio.run(scenario())
    assert out["ready"] == 503 and out["ready_body"]["draining"] and out["ready_after_s"] < 1.0, out
    assert out["new_call"] == 503 and out["new_call_body"]["error"] == "draining" and out["retry_after"], out
    # both calls go on: ~75 frames each in those 3 s at 25 fps, and nobody was told the call ended
    assert out["alive_during"] and min(out["frames_during"]) >= 60 and not out["ended_events"], out
    assert out["delete_first"] in (200, 204) and out["alive_with_one"], out
    assert out["exit"] == 0 and out["exit_after_s"] < 10, out


def test_public_url_makes_the_location_absolute_on_this_worker() -> None:
    async def scenario() -> tuple[str, int]:
        async with running_server(public_url="https://worker-3.avatar.example/", **CALL) as server, \
                aiohttp.ClientSession() as http:
            call = CallClient(server.http, wav=None, keep_video=False)
            assert await call.start() == 201
            location = call.location or ""
            # the path part of it is what this worker serves
            path = location.removeprefix("https://worker-3.avatar.example")
            async with http.get(f"{server.http}{path}") as r:
                status = r.status
            call.location = path
            await call.close()
            return location, status

    location, status = asyncio.run(scenario())
    assert location.startswith("https://worker-3.avatar.example/v1/calls/"), location
    assert status == 200


def test_public_url_must_be_an_http_url() -> None:
    import pytest
    from pydantic import ValidationError

    from web.settings import ServerSettings

    with pytest.raises(ValidationError, match="http"):
        ServerSettings(public_url="worker-3:8080")
