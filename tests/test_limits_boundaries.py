"""Claim: every documented limit holds at its exact boundary (docs/limits.md, "Sizes, queues
and rates"; docs/stream-protocol.md, "Limits and settings"; docs/calls.md, "API"): a text of
exactly `max_text_chars` characters is spoken and one more is refused with `text_too_long`
(websocket `say` and `append` run, and `POST /v1/calls/{id}/say`); an SDP offer of exactly
`max_sdp_bytes` is read and one byte more gets 413 (with Content-Length or chunked); the
`max_calls`-th call is answered, the next gets 503 with `Retry-After: retry_after_s`, and a
DELETE makes room again; the `max_queued_utterances`-th utterance is queued and the next
gets `queue_full`; the `max_connections`-th websocket is served and the next is closed with
1013. Each limit is set small here so that its boundary is cheap to reach."""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from web.stream.protocol import SERVER_EVENTS, Error, Queued, Ready

from callutil import CallClient
from httputil import request as _req
from wsutil import Server, running_server

CALL = {"call_size": 256, "sizes": [256], "size": 256}
LONG = "This is a rather long sentence that takes the avatar a few seconds to say. " * 3


def _text(n: int) -> str:
    """Exactly `n` characters of pronounceable text, no whitespace at either end (the call
    API strips it before counting)."""
    text = ("ab " * n)[: n - 1] + "x"
    assert len(text) == n and text == text.strip()
    return text


async def _events(ws: ClientConnection, until: Any, timeout: float = 30.0) -> list[Any]:
    """Events (binary media skipped) until `until(events)` is true."""
    out: list[Any] = []
    async with asyncio.timeout(timeout):
        while not until(out):
            msg = await ws.recv()
            if isinstance(msg, str):
                out.append(SERVER_EVENTS.validate_json(msg))
    return out


@contextlib.asynccontextmanager
async def _stream(server: Server) -> AsyncIterator[tuple[ClientConnection, Ready]]:
    async with connect(server.url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "config"}))
        events = await _events(ws, lambda out: bool(out))
        assert isinstance(events[0], Ready), events
        yield ws, events[0]


def _answered(ident: str) -> Any:
    """`until` for _events: the say/append with this id was queued or refused."""
    return lambda out: any(isinstance(e, (Queued, Error)) and e.id == ident for e in out)


def _errors(events: list[Any]) -> list[tuple[str, str | None]]:
    return [(e.code.value, e.id) for e in events if isinstance(e, Error)]


def _queued(events: list[Any]) -> list[tuple[str, int]]:
    return [(e.id, e.position) for e in events if isinstance(e, Queued)]


# -- max_text_chars ---------------------------------------------------------------------------

def test_websocket_say_of_exactly_max_text_chars_is_queued_and_one_more_is_text_too_long() -> None:
    async def scenario() -> tuple[int, list[Any]]:
        async with running_server(max_text_chars=200) as server, _stream(server) as (ws, ready):
            await ws.send(json.dumps({"type": "say", "text": _text(200), "id": "at-limit"}))
            await ws.send(json.dumps({"type": "say", "text": _text(201), "id": "over"}))
            events = await _events(ws, _answered("over"))
            await ws.send(json.dumps({"type": "interrupt"}))
            return ready.limits.max_text_chars, events

    limit, events = asyncio.run(scenario())
    assert limit == 200  # what `ready` tells the client
    assert _queued(events) == [("at-limit", 0)], events
    assert _errors(events) == [("text_too_long", "over")], events


def test_websocket_append_run_may_grow_to_exactly_max_text_chars_and_not_one_more() -> None:
    async def scenario() -> list[Any]:
        async with running_server(max_text_chars=200) as server, _stream(server) as (ws, _):
            await ws.send(json.dumps({"type": "append", "text": _text(150), "id": "run"}))
            await ws.send(json.dumps({"type": "append", "text": " " + _text(49)}))  # the run: 200
            await ws.send(json.dumps({"type": "append", "text": "y"}))  # the run would be 201
            await ws.send(json.dumps({"type": "say", "text": "Done.", "id": "end"}))  # in order: after all
            events = await _events(ws, _answered("end"))
            await ws.send(json.dumps({"type": "interrupt"}))
            return events

    events = asyncio.run(scenario())
    assert _queued(events) == [("run", 0), ("end", 1)], events
    assert _errors(events) == [("text_too_long", "run")], events  # only the 201st character


def test_call_say_of_exactly_max_text_chars_is_202_and_one_more_is_400_text_too_long() -> None:
    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        async with running_server(**CALL, max_text_chars=200) as server:
            client = CallClient(server.http, wav=None, keep_video=False)
            assert await client.start() == 201
            try:
                return [await client.post("say", {"text": _text(n)}) for n in (200, 201)]
            finally:
                await client.close()

    (ok, ok_body), (over, over_body) = asyncio.run(scenario())
    assert ok == 202 and "utterance_id" in ok_body, ok_body
    assert over == 400 and over_body["error"] == "text_too_long", over_body
    assert "201" in over_body["message"] and "200" in over_body["message"], over_body


# -- max_sdp_bytes ----------------------------------------------------------------------------

async def _offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("control")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def _padded(sdp: str, size: int) -> bytes:
    """`sdp` with session-level `a=x-pad:` lines added (ignored by SDP parsers) to exactly
    `size` bytes."""
    head, tail = sdp.split("m=", 1)
    need = size - len(sdp.encode())
    assert need >= 11, (size, len(sdp))
    lines = []
    while need > 0:
        n = need if need <= 300 else (300 if need - 300 >= 11 else need - 11)  # no line under 11
        lines.append("a=x-pad:" + "p" * (n - 10) + "\r\n")
        need -= n
    out = (head + "".join(lines) + "m=" + tail).encode()
    assert len(out) == size, (len(out), size)
    return out


def test_sdp_offer_of_exactly_max_sdp_bytes_is_read_and_one_byte_more_is_413() -> None:
    limit = 8192

    async def scenario() -> dict[str, tuple[int, dict[str, Any], dict[str, str]]]:
        async with running_server(**CALL, max_sdp_bytes=limit) as server:
            pc, sdp = await _offer()
            assert len(sdp.encode()) < limit - 100
            out = {}
            for name, size, chunked in (("at_limit", limit, False), ("over", limit + 1, False),
                                        ("at_limit_chunked", limit, True), ("over_chunked", limit + 1, True)):
                body = _padded(sdp, size)

                async def pieces(body: bytes = body) -> Any:
                    yield body[:3000]
                    await asyncio.sleep(0.2)
                    yield body[3000:]

                out[name] = await _req("POST", f"{server.http}/v1/calls", body=pieces() if chunked else body,
                                       ctype="application/sdp")
                if out[name][0] == 201:
                    assert (await _req("DELETE", server.http + out[name][2]["Location"]))[0] == 200
            await pc.close()
            return out

    out = asyncio.run(scenario())
    for name in ("at_limit", "at_limit_chunked"):
        status, body, _ = out[name]
        # read whole: then answered, or refused for its content, but not for its size
        assert status in (201, 400) and body.get("error") != "too_large", (name, status, body)
    for name in ("over", "over_chunked"):
        status, body, _ = out[name]
        assert status == 413 and body["error"] == "too_large", (name, status, body)


# -- max_calls --------------------------------------------------------------------------------

def test_max_calls_are_answered_the_next_gets_503_with_retry_after_and_delete_makes_room() -> None:
    async def scenario() -> dict[str, Any]:
        async with running_server(**CALL, max_calls=2, retry_after_s=7) as server:
            out: dict[str, Any] = {}
            first, second = (CallClient(server.http, wav=None, keep_video=False) for _ in range(2))
            out["first"], out["second"] = await first.start(), await second.start()
            pc, sdp = await _offer()
            out["third"] = await _req("POST", f"{server.http}/v1/calls", body=sdp, ctype="application/sdp")
            out["delete"] = await first.close()
            again = CallClient(server.http, wav=None, keep_video=False)
            out["again"] = await again.start()
            for c in (second, again):
                await c.close()
            await pc.close()
            return out

    out = asyncio.run(scenario())
    assert out["first"] == 201 and out["second"] == 201, out
    status, body, headers = out["third"]
    assert status == 503 and body["error"] == "busy", out["third"]
    assert headers.get("Retry-After") == "7", headers  # the retry_after_s setting
    assert out["delete"] == 200 and out["again"] == 201, out


# -- max_queued_utterances --------------------------------------------------------------------

def test_websocket_queue_takes_max_queued_utterances_and_the_next_is_queue_full() -> None:
    async def scenario() -> tuple[int, list[Any], list[Any]]:
        async with running_server(max_queued_utterances=2) as server, _stream(server) as (ws, ready):
            for ident in ("a", "b", "c"):
                await ws.send(json.dumps({"type": "say", "text": LONG, "id": ident}))
            events = await _events(ws, _answered("c"))
            await ws.send(json.dumps({"type": "interrupt"}))  # both done: room again
            await ws.send(json.dumps({"type": "say", "text": "Hello again.", "id": "d"}))
            after = await _events(ws, _answered("d"))
            await ws.send(json.dumps({"type": "interrupt"}))
            return ready.limits.max_queued_utterances, events, after

    limit, events, after = asyncio.run(scenario())
    assert limit == 2
    assert _queued(events) == [("a", 0), ("b", 1)], events
    assert _errors(events) == [("queue_full", "c")], events
    assert _queued(after) == [("d", 0)] and _errors(after) == [], after


# -- max_connections --------------------------------------------------------------------------

def test_max_connections_websockets_are_served_and_the_next_is_closed_1013() -> None:
    async def scenario() -> tuple[list[bool], int | None, bool]:
        async with running_server(max_connections=2) as server:
            served = []
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(2):
                    _, ready = await stack.enter_async_context(_stream(server))
                    served.append(isinstance(ready, Ready))
                async with connect(server.url, max_size=None) as third:
                    refused: int | None = None
                    try:
                        await third.send(json.dumps({"type": "config"}))
                        async with asyncio.timeout(10):
                            while True:
                                await third.recv()
                    except ConnectionClosed:
                        refused = third.close_code
                    except TimeoutError:
                        pass  # served: refused stays None
            # both closed: a newcomer is served again
            readmitted = False
            async with asyncio.timeout(20):
                while not readmitted:
                    try:
                        async with _stream(server) as (_, ready):
                            readmitted = isinstance(ready, Ready)
                    except (ConnectionClosed, AssertionError):
                        await asyncio.sleep(0.2)
            return served, refused, readmitted

    served, refused, readmitted = asyncio.run(scenario())
    assert served == [True, True]
    assert refused == 1013
    assert readmitted
