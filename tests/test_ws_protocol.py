"""Claim: `/v1/stream` answers bad input, limits, auth and origins as docs/stream-protocol.md
says — every case ends in an `error` event or a documented close code, and the server goes on
serving others."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from web.stream import framing
from web.stream.client import StreamClient
from web.stream.protocol import CLIENT_MESSAGES, SERVER_EVENTS, CloseCode, Config, Done, Error, Queued, Ready

from wsutil import Server, running_server


async def events_until(ws: ClientConnection, pred: Any, timeout: float = 10.0) -> list[Any]:
    """Reads (skipping media) until an event satisfies `pred`."""
    out: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.recv()
            if isinstance(msg, bytes):
                continue
            event = SERVER_EVENTS.validate_json(msg)
            out.append(event)
            if pred(event):
                return out


async def raw(server: Server, **kwargs: Any) -> ClientConnection:
    return await connect(server.url, max_size=None, ping_interval=None, compression=None, **kwargs)


async def assert_serves(server: Server) -> None:
    """Another client gets a full stream: the server survived whatever came before."""
    async with await StreamClient.connect(server.url) as c:
        await c.say("Still here.", id="alive")
        async with asyncio.timeout(20):
            async for item in c:
                if isinstance(item, Done) and item.id == "alive":
                    return


def test_schema_is_published() -> None:
    async def scenario() -> dict[str, Any]:
        async with running_server(preload=False) as server, aiohttp.ClientSession() as http:
            async with http.get(f"{server.http}/v1/stream/schema") as r:
                assert r.status == 200
                return await r.json()

    schema = asyncio.run(scenario())
    assert schema["version"] == 1
    client = json.dumps(schema["client_messages"])
    for kind in ("config", "say", "append", "flush", "interrupt", "keyframe"):
        assert f'"{kind}"' in client
    server = json.dumps(schema["server_events"])
    for kind in ("ready", "queued", "started", "word", "viseme", "done", "error", "stats"):
        assert f'"{kind}"' in server
    assert schema["close_codes"]["slow_consumer"] == 4008


def test_bad_messages_get_error_events_and_the_connection_goes_on() -> None:
    async def scenario() -> list[Error]:
        async with running_server() as server:
            ws = await raw(server)
            await ws.send(json.dumps({"type": "config"}))
            await events_until(ws, lambda e: isinstance(e, Ready))
            bad = ["{not json", "[1, 2]", json.dumps({"type": "dance"}), json.dumps({"text": "no type"}),
                   json.dumps({"type": "say"}), json.dumps({"type": "say", "text": 5}),
                   json.dumps({"type": "say", "text": "hi", "colour": "red"}),
                   json.dumps({"type": "say", "text": "?!"}), json.dumps({"type": "say", "text": "x", "id": "a b"}),
                   json.dumps({"type": "say", "text": "Hi.", "voice": "klingon"}),
                   json.dumps({"type": "config", "size": 256})]
            errors: list[Error] = []
            for msg in bad:
                await ws.send(msg)
                [*_, err] = await events_until(ws, lambda e: isinstance(e, Error))
                errors.append(err)
            await ws.send(json.dumps({"type": "say", "text": "Good.", "id": "ok"}))
            await events_until(ws, lambda e: isinstance(e, Done) and e.id == "ok", timeout=20)
            await ws.close()
            return errors

    errors = asyncio.run(scenario())
    codes = [e.code.value for e in errors]
    assert codes == ["invalid_json", "invalid_json", "unknown_type", "invalid_message", "invalid_message",
                     "invalid_message", "invalid_message", "invalid_message", "invalid_message", "unavailable",
                     "already_started"]
    assert "text" in errors[4].message  # says which field is missing
    assert not any(e.fatal for e in errors)


def test_binary_from_the_client_closes_1003() -> None:
    async def scenario() -> int | None:
        async with running_server() as server:
            ws = await raw(server)
            await ws.send(b"\x00\x01binary")
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
            await assert_serves(server)
            return ws.close_code

    assert asyncio.run(scenario()) == CloseCode.UNSUPPORTED_DATA


def test_a_10_mb_message_closes_1009_and_the_server_goes_on() -> None:
    async def scenario() -> int | None:
        async with running_server() as server:
            ws = await raw(server)
            try:
                await ws.send(json.dumps({"type": "say", "text": "a" * 10_000_000}))
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
            except ConnectionClosed:
                pass
            await assert_serves(server)
            return ws.close_code

    assert asyncio.run(scenario()) == CloseCode.MESSAGE_TOO_BIG


def test_a_1_mb_text_is_refused_with_an_error_event() -> None:
    async def scenario() -> list[Any]:
        async with running_server() as server:
            ws = await raw(server)
            await ws.send(json.dumps({"type": "say", "text": "word " * 200_000, "id": "huge"}))
            events = await events_until(ws, lambda e: isinstance(e, Error))
            await ws.send(json.dumps({"type": "append", "text": "word " * 900, "id": "run"}))
            await events_until(ws, lambda e: isinstance(e, Queued))
            await ws.send(json.dumps({"type": "append", "text": "word " * 200}))  # the run gets too long
            events += await events_until(ws, lambda e: isinstance(e, Error))
            await ws.close()
            return events

    events = asyncio.run(scenario())
    errors = [e for e in events if isinstance(e, Error)]
    assert [e.code.value for e in errors] == ["text_too_long", "text_too_long"]
    assert errors[0].id == "huge" and errors[1].id == "run"


def test_1000_says_in_a_second_are_refused_politely() -> None:
    async def scenario() -> tuple[list[Any], float]:
        async with running_server() as server:
            ws = await raw(server)
            t0 = time.monotonic()
            for i in range(1000):
                await ws.send(json.dumps({"type": "say", "text": f"Number {i}.", "id": f"n{i}"}))
            sent_s = time.monotonic() - t0
            events = await events_until(ws, lambda e: False if not isinstance(e, (Queued, Error)) else
                                        int((e.id or "n-1")[1:]) == 999, timeout=20)
            await ws.close()
            await assert_serves(server)
            return events, sent_s

    events, sent_s = asyncio.run(scenario())
    assert sent_s < 1.0
    answers = [e for e in events if isinstance(e, (Queued, Error))]
    assert len(answers) == 1000  # each message answered
    queued = [e for e in answers if isinstance(e, Queued)]
    codes = {e.code.value for e in answers if isinstance(e, Error)}
    assert 1 <= len(queued) <= 8  # max_queued_utterances
    assert codes <= {"queue_full", "rate_limited"} and "rate_limited" in codes


def test_queue_limit_and_duplicate_ids() -> None:
    async def scenario() -> list[Any]:
        async with running_server(max_queued_utterances=2, message_burst=100) as server:
            ws = await raw(server)
            for ident in ("a", "a", "b", "c"):
                await ws.send(json.dumps({"type": "say", "text": "A sentence to queue.", "id": ident}))
            events = await events_until(ws, lambda e: isinstance(e, Error) and e.id == "c")
            await ws.close()
            return [e for e in events if isinstance(e, (Queued, Error))]

    answers = asyncio.run(scenario())
    assert [(type(e).__name__, e.id, getattr(e, "code", None)) for e in answers] == [
        ("Queued", "a", None), ("Error", "a", "duplicate_id"), ("Queued", "b", None), ("Error", "c", "queue_full")]


def test_bearer_token_is_required_when_set() -> None:
    async def scenario() -> tuple[int, int | None]:
        async with running_server(token="s3cret", preload=False) as server:
            with pytest.raises(InvalidStatus) as refused:
                await raw(server)
            with pytest.raises(InvalidStatus):
                await raw(server, additional_headers={"Authorization": "Bearer wrong"})
            ok = await raw(server, additional_headers={"Authorization": "Bearer s3cret"})
            await ok.close()
            ok2 = await connect(server.url + "?token=s3cret")  # what a browser does
            await ok2.close()
            async with await StreamClient.connect(server.url, token="s3cret", config=Config()) as c:
                return refused.value.response.status_code, c.close_code

    status, _ = asyncio.run(scenario())
    assert status == 401


def test_origins_other_than_our_own_are_refused() -> None:
    async def scenario() -> int:
        async with running_server(allowed_origins=["https://app.example"], preload=False) as server:
            with pytest.raises(InvalidStatus) as refused:
                await raw(server, origin="https://evil.example")
            for origin in ("https://app.example", f"http://127.0.0.1:{server.port}"):
                ok = await raw(server, origin=origin)
                await ok.close()
            return refused.value.response.status_code

    assert asyncio.run(scenario()) == 403


def test_over_the_connection_limit_closes_1013() -> None:
    async def scenario() -> int | None:
        async with running_server(max_connections=1, preload=False) as server:
            first = await raw(server)
            second = await raw(server)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(10):
                    await second.recv()
            await first.close()
            return second.close_code

    assert asyncio.run(scenario()) == CloseCode.TRY_AGAIN_LATER


def test_framing_round_trip_and_message_models() -> None:
    msg = framing.pack(framing.VIDEO, framing.KEYFRAME | framing.START, 2**40 + 3, 1, b"payload")
    head, payload = framing.unpack(msg)
    assert len(msg) == framing.HEADER_SIZE + 7 == 23
    assert (head.stream, head.keyframe, head.start, head.discontinuity) == (1, True, True, False)
    assert (head.pts, head.duration, payload) == (2**40 + 3, 1, b"payload")
    assert framing.unpack(framing.pack(framing.AUDIO, 0, -120, 960, b""))[0].pts == -120
    with pytest.raises(ValueError):
        framing.unpack(b"short")
    assert CLIENT_MESSAGES.validate_json('{"type": "flush"}').type == "flush"


def test_settings_come_from_the_environment() -> None:
    from web.settings import ServerSettings

    s = ServerSettings.from_env({"AVATAR_TOKEN": "t", "AVATAR_MAX_CONNECTIONS": "3", "AVATAR_PRELOAD": "false",
                                 "AVATAR_ALLOWED_ORIGINS": '["https://a.example"]', "AVATAR_SIZES": "[128, 256]"},
                                port=9999)
    assert (s.token, s.max_connections, s.preload, s.allowed_origins, s.sizes, s.port) == (
        "t", 3, False, ["https://a.example"], [128, 256], 9999)
    with pytest.raises(ValueError):
        ServerSettings.from_env({"AVATAR_SIZE": "255"})


def test_avatar_serve_starts_the_server() -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "AVATAR_PRELOAD": "false", "AVATAR_VOICE": "en-us"}
    proc = subprocess.Popen([sys.executable, "-m", "avatar", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "serving on" in line:
                break
        else:
            raise AssertionError(f"avatar serve exited with {proc.wait()}")

        async def fetch(path: str) -> tuple[int, str]:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
                return r.status, await r.text()

        status, page = asyncio.run(fetch("/player"))
        assert status == 200 and "player.js" in page
        status, page = asyncio.run(fetch("/"))  # the call page (WebRTC)
        assert status == 200 and "call.js" in page
    finally:
        proc.terminate()
        assert proc.wait(15) is not None


def test_an_avatar_that_cannot_be_animated_is_refused_by_name_and_the_default_still_serves(tmp_path) -> None:
    """An operator's extra avatar whose mouth is covered: a stream asking for it gets an
    `unavailable` error that names it and says why; the same server streams the default."""
    from PIL import Image

    from pipelines.evaluation.test_portraits import occluded_mouth

    path = tmp_path / "covered.png"
    Image.fromarray(occluded_mouth("grey").image).save(path)

    async def scenario() -> tuple[Error, bool]:
        async with running_server(avatars={"covered": path}) as server:
            ws = await raw(server)
            await ws.send(json.dumps({"type": "config", "avatar": "covered"}))
            [*_, err] = await events_until(ws, lambda e: isinstance(e, Error), timeout=30)
            await ws.close()
            ws = await raw(server)
            await ws.send(json.dumps({"type": "config"}))
            await events_until(ws, lambda e: isinstance(e, Ready))
            await ws.send(json.dumps({"type": "say", "text": "Fine.", "id": "ok"}))
            done = await events_until(ws, lambda e: isinstance(e, Done) and e.id == "ok", timeout=20)
            await ws.close()
            return err, bool(done)

    err, served = asyncio.run(scenario())
    assert err.code.value == "unavailable", err
    assert "covered" in err.message and "cannot be animated" in err.message, err.message
    assert served
