"""Claim: SIGTERM or SIGINT stops the server gracefully whatever signal state it inherited —
new sessions are refused (503, /readyz false), streams get close code 1001, calls an `ended`
event on the data channel and a DTLS close, and the process exits 0 within the grace period
(docs/calls.md and docs/stream-protocol.md, "Stopping")."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import aiohttp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from callutil import CallClient, started_server
from wsutil import running_server

CALL = {"call_size": 256, "sizes": [256], "size": 256, "voice": "en-us"}
LONG = "This sentence keeps the avatar talking while the server is asked to stop. " * 6


async def _streaming(url: str) -> Any:
    ws = await connect(url, max_size=None)
    await ws.send(json.dumps({"type": "say", "text": LONG}))
    async with asyncio.timeout(30):  # until media flows
        while not isinstance(await ws.recv(), bytes):
            pass
    return ws


async def _close_code(ws: Any, timeout: float) -> int | None:
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed:
        pass
    return ws.close_code


async def _wait_exit(proc: Any, timeout: float) -> tuple[int | None, float]:
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.05)
    return proc.poll(), time.monotonic() - t0


def test_sigterm_in_its_own_process_group_closes_streams_1001_and_calls_with_ended() -> None:
    async def scenario() -> tuple[int | None, list[dict[str, Any]], int | None, float, str]:
        async with started_server(new_session=True, shutdown_grace_s=8, **CALL) as server:
            ws = await _streaming(server.http.replace("http", "ws") + "/v1/stream")
            call = CallClient(server.http, wav=None, keep_video=False)
            assert await call.start() == 201
            async with asyncio.timeout(10):
                while not (call.channel and call.channel.readyState == "open"):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # media flowing on both
            os.killpg(server.proc.pid, signal.SIGTERM)  # as a service manager stops a group
            code = await _close_code(ws, 10)
            status, took = await _wait_exit(server.proc, 15)
            await asyncio.sleep(0.3)
            events = list(call.got.events)
            dtls = call.pc.connectionState
            await call.close(delete=False)
            return code, events, status, took, dtls

    code, events, status, took, dtls = asyncio.run(scenario())
    assert code == 1001
    ended = [e for e in events if e.get("kind") == "ended"]
    assert ended and "stopping" in ended[0]["reason"], events[-5:]
    assert dtls in ("closed", "failed"), dtls  # the server closed the DTLS association
    assert status == 0 and took <= 8 + 2, (status, took)


def test_sigint_works_when_started_with_it_ignored_and_signals_blocked() -> None:
    """Started in its own session with SIGINT ignored and both signals blocked (what a
    background job or some supervisors hand down): SIGINT still stops it, gracefully."""
    async def scenario() -> tuple[int | None, int | None, float]:
        async with started_server(new_session=True, hostile_signals=True, preload=False, **CALL) as server:
            ws = await _streaming(server.http.replace("http", "ws") + "/v1/stream")
            os.kill(server.proc.pid, signal.SIGINT)
            code = await _close_code(ws, 10)
            status, took = await _wait_exit(server.proc, 15)
            return code, status, took

    code, status, took = asyncio.run(scenario())
    assert code == 1001 and status == 0, (code, status, took)


def test_while_stopping_newcomers_are_refused_and_readyz_is_false() -> None:
    """The stop itself (web.app.stop), watched from outside while it waits for a session."""
    from web.app import stop

    async def scenario() -> dict[str, Any]:
        async with running_server(**CALL) as server, aiohttp.ClientSession() as http:
            ws = await _streaming(server.url)
            out: dict[str, Any] = {}
            async with http.get(f"{server.http}/readyz") as r:
                out["ready_before"] = r.status
            stopping = asyncio.ensure_future(stop(server.app, 5.0))
            await asyncio.sleep(0)  # the stop has begun: flags set, closes sent
            async with http.get(f"{server.http}/readyz") as r:
                out["ready_during"], out["body"] = r.status, await r.json()
            async with http.post(f"{server.http}/v1/calls", data="v=0\r\nm=audio 9 UDP 0\r\n",
                                 headers={"Content-Type": "application/sdp"}) as r:
                out["new_call"], out["retry_after"] = r.status, r.headers.get("Retry-After")
            async with http.get(server.url.replace("ws", "http")) as r:
                out["new_stream"] = r.status
            out["code"] = await _close_code(ws, 10)
            await stopping
            return out

    out = asyncio.run(scenario())
    assert out["ready_before"] == 200 and out["ready_during"] == 503 and out["body"]["draining"], out
    assert out["new_call"] == 503 and out["retry_after"], out
    assert out["new_stream"] == 503 and out["code"] == 1001, out
