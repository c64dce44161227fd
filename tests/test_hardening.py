"""Claim: a hostile or careless client cannot grow the server, lock others out or change state
cross-site — every case answers with a clear status, close code or error event, and memory,
threads and slots stay bounded (docs/limits.md, docs/security.md). One test per case found
by the outside test of the server (issue "Hardening"); each failed on the code before it."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from web.health import resident_mb
from web.stream.protocol import SERVER_EVENTS, Error, Ready

from callutil import CallClient, server_process
from httputil import request as _req
from wsutil import Server, running_server

CALL = {"call_size": 256, "sizes": [256], "size": 256}


async def _call(server: Server) -> CallClient:
    client = CallClient(server.http, wav=None, keep_video=False)
    assert await client.start() == 201
    return client


async def _ws_events(server: Server, messages: list[dict[str, Any]], until: Any, timeout: float = 20.0) -> list[Any]:
    async with connect(server.url, max_size=None) as ws:
        for m in messages:
            await ws.send(json.dumps(m))
        out: list[Any] = []
        async with asyncio.timeout(timeout):
            while True:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    continue
                out.append(SERVER_EVENTS.validate_json(msg))
                if until(out):
                    return out


def test_unknown_and_oversized_voices_are_refused_up_front_and_nothing_is_kept() -> None:
    """Was: each distinct unknown voice stayed in the server for good (120 names of 480 KB:
    +380 MB, never returned), and got 202."""
    async def scenario() -> tuple[list[int], float, float, int]:
        async with running_server(**CALL) as server:
            client = await _call(server)
            url = f"{server.http}{client.location}/say"
            assert (await _req("POST", url, body={"text": "Hi.", "voice": "en-us"}))[0] == 202  # warm
            await asyncio.sleep(0.5)
            before = resident_mb()
            statuses = []
            for i in range(120):
                name = f"{i}" + "x" * 200_000  # a 200 KB name inside a body under the size limit
                status, body, _ = await _req("POST", url, body={"text": "Hi.", "voice": name})
                assert "voice" in body["message"] and len(body["message"]) < 300, body
                statuses.append(status)
            statuses.append((await _req("POST", url, body={"text": "Hi.", "voice": "x" * 480_000}))[0])
            for i in range(50):  # well-formed names of no voice
                status, body, _ = await _req("POST", url, body={"text": "Hi.", "voice": f"zz-nope{i}"})
                assert body["error"] == "unknown_voice", body
                statuses.append(status)
            await asyncio.sleep(0.5)
            after = resident_mb()
            kept = len(server.state.engines._speech)
            await client.close()
            return statuses, before or 0.0, after or 0.0, kept

    statuses, before, after, kept = asyncio.run(scenario())
    assert set(statuses[:120]) == {400} and statuses[120] == 413 and set(statuses[121:]) == {400}, statuses
    assert after - before < 30, (before, after)
    assert kept <= 2  # one engine per speech backend, whatever names were asked for


def test_many_distinct_espeak_voices_share_one_thread() -> None:
    """Was: every distinct valid espeak name (language + variant) started a TTS thread that
    never stopped: 180 names, 25 -> 214 threads. Over the call API and the websocket."""
    from pipelines.speech import espeak

    names = [f"{v}+{var}" for v in ("en-us", "en", "de", "fr", "es", "it") for var in espeak.list_variants()]
    assert len(names) >= 180
    names = names[:180]

    async def scenario() -> tuple[int, int, int]:
        async with running_server(**CALL) as server:
            client = await _call(server)
            url = f"{server.http}{client.location}"
            assert (await _req("POST", f"{url}/say", body={"text": "Hi.", "voice": "en-us"}))[0] == 202
            await asyncio.sleep(0.5)
            threads0 = threading.active_count()
            for name in names[:120]:
                status, body, _ = await _req("POST", f"{url}/say", body={"text": "Hi.", "voice": name})
                assert status == 202, (name, body)
                assert (await _req("POST", f"{url}/interrupt", body={}))[0] == 200
            async with connect(server.url, max_size=None) as ws:
                for name in names[120:]:
                    await ws.send(json.dumps({"type": "say", "text": "Hi.", "voice": name}))
                    await ws.send(json.dumps({"type": "interrupt"}))
                    await asyncio.sleep(0.06)  # under the message rate limit
                await ws.send(json.dumps({"type": "say", "text": "Done.", "id": "last", "voice": names[-1]}))
                async with asyncio.timeout(20):
                    while True:
                        msg = await ws.recv()
                        if isinstance(msg, str) and '"done"' in msg and '"last"' in msg:
                            break
            threads1 = threading.active_count()
            await client.close()
            return threads0, threads1, len(server.state.engines._speech)

    threads0, threads1, backends = asyncio.run(scenario())
    assert threads1 - threads0 <= 10, (threads0, threads1)
    assert backends <= 2


def test_silent_websockets_are_closed_and_their_slots_freed() -> None:
    """Was: 16 connections that never sent a first message kept every newcomer out (1013)
    for as long as they stayed."""
    async def scenario() -> tuple[list[int | None], int | None, bool]:
        async with running_server(max_connections=3, first_message_timeout_s=1.0, preload=False) as server:
            silent = [await connect(server.url, max_size=None) for _ in range(3)]
            newcomer = await connect(server.url, max_size=None)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(newcomer.recv(), 5)
            refused = newcomer.close_code
            codes = []
            for ws in silent:
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(5):
                        while True:
                            await ws.recv()
                codes.append(ws.close_code)
            events = await _ws_events(server, [{"type": "config"}], lambda out: isinstance(out[-1], Ready))
            return codes, refused, isinstance(events[-1], Ready)

    codes, refused, served = asyncio.run(scenario())
    assert refused == 1013
    assert codes == [1008, 1008, 1008], codes
    assert served


async def _offer_that_never_connects() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp  # the answer is never applied: ICE cannot complete


def test_offers_whose_ice_never_completes_give_their_slot_back() -> None:
    """Was: 4 offers whose ICE never completed held every call slot (503 for everyone) for
    20 s each, their pipelines running meanwhile."""
    async def scenario() -> tuple[list[int], int, float, int, float]:
        async with running_server(**CALL, max_calls=2, call_connect_timeout_s=1.5) as server:
            registry = server.app[_calls_key()]["registry"]
            pcs, statuses = [], []
            for _ in range(2):
                pc, sdp = await _offer_that_never_connects()
                pcs.append(pc)
                statuses.append((await _req("POST", f"{server.http}/v1/calls", body=sdp, ctype="application/sdp"))[0])
            busy = (await _req("POST", f"{server.http}/v1/calls", body=pcs[0].localDescription.sdp,
                               ctype="application/sdp"))[0]
            running = server.state.metrics.value("avatar_sessions_active", graph="live_call")
            await asyncio.sleep(3.0)
            left = len(registry.calls)
            stopped = server.state.metrics.value("avatar_sessions_active", graph="live_call")
            ok = await _call(server)  # a real caller gets in
            await ok.close()
            for pc in pcs:
                await pc.close()
            return statuses, busy, running, left, stopped

    statuses, busy, running, left, stopped = asyncio.run(scenario())
    assert statuses == [201, 201] and busy == 503
    assert running == 2  # their pipelines ran ...
    assert left == 0 and stopped == 0  # ... and were stopped with the slot freed


def test_the_say_queue_of_a_call_is_bounded() -> None:
    """Was: 2000 long says were all accepted (202), +68 MB."""
    async def scenario() -> tuple[list[int], dict[str, str], dict[str, Any], int, list[dict[str, Any]]]:
        async with running_server(**CALL, max_queued_utterances=4) as server:
            client = await _call(server)
            url = f"{server.http}{client.location}"
            text = "This is a rather long sentence that takes a while to say. " * 20
            statuses, headers, body = [], {}, {}
            for _ in range(6):
                status, body, headers = await _req("POST", f"{url}/say", body={"text": text})
                statuses.append(status)
            async with asyncio.timeout(10):
                while not (client.channel and client.channel.readyState == "open"):
                    await asyncio.sleep(0.05)
            client.channel.send(json.dumps({"type": "say", "text": text}))
            await asyncio.sleep(1.0)
            dc_errors = [e for e in client.got.events if e.get("type") == "error"]
            await _req("POST", f"{url}/interrupt", body={})
            again = (await _req("POST", f"{url}/say", body={"text": "Hello again."}))[0]
            await client.close()
            return statuses, headers, body, again, dc_errors

    statuses, headers, body, again, dc_errors = asyncio.run(scenario())
    assert statuses == [202] * 4 + [429] * 2, statuses
    assert body["error"] == "queue_full" and "Retry-After" in headers
    assert [e["code"] for e in dc_errors] == ["queue_full"], dc_errors
    assert again == 202  # an interrupt empties it


def test_an_offer_sent_chunked_in_two_pieces_is_read_whole() -> None:
    """Was: the handler read only what was buffered -> 400 for a valid offer."""
    async def scenario() -> int:
        async with running_server(**CALL) as server:
            client = CallClient(server.http, wav=None, keep_video=False)
            client.pc.addTransceiver("audio", direction="recvonly")
            client.pc.addTransceiver("video", direction="recvonly")
            await client.pc.setLocalDescription(await client.pc.createOffer())
            sdp = client.pc.localDescription.sdp.encode()

            async def pieces() -> Any:
                yield sdp[: len(sdp) // 2]
                await asyncio.sleep(0.3)
                yield sdp[len(sdp) // 2:]

            async with aiohttp.ClientSession() as s, s.post(f"{server.http}/v1/calls", data=pieces(),
                                                            headers={"Content-Type": "application/sdp"}) as r:
                status = r.status
                if status == 201:
                    client.location = r.headers["Location"]
            await client.close()
            return status

    assert asyncio.run(scenario()) == 201


def test_bad_query_values_and_seeds_get_4xx_or_an_error_event() -> None:
    """Was: ?window=abc -> 500 with a traceback; config seed -1 -> an unhandled exception and
    a close with 1000 and no error event."""
    async def scenario() -> tuple[list[int], list[Any]]:
        async with running_server(**CALL) as server:
            client = await _call(server)
            url = f"{server.http}{client.location}"
            statuses = [(await _req("GET", f"{url}?window={w}", ctype=None))[0]
                        for w in ("abc", "0", "-5", "1e9", "10")]
            await client.close()
            events = await _ws_events(server, [{"type": "config", "seed": -1}, {"type": "config", "seed": 3}],
                                      lambda out: isinstance(out[-1], Ready))
            return statuses, events

    statuses, events = asyncio.run(scenario())
    assert statuses == [400, 400, 400, 400, 200], statuses
    errors = [e for e in events if isinstance(e, Error)]
    assert len(errors) == 1 and errors[0].code.value == "invalid_message" and "seed" in errors[0].message
    assert isinstance(events[-1], Ready)  # the connection went on and started with seed 3


def test_hosts_origins_and_cross_site_requests_are_refused() -> None:
    """Was: DNS rebinding passed (Host and Origin both evil.example); say took text/plain and
    interrupt an empty POST: cross-site requests a browser sends without preflight."""
    async def scenario() -> dict[str, Any]:
        async with running_server(**CALL, allowed_hosts=["avatar.example"]) as server:
            out: dict[str, Any] = {}
            h = server.http
            out["evil_host"] = (await _req("GET", f"{h}/readyz", ctype=None, Host="evil.example"))[0]
            out["allowed_host"] = (await _req("GET", f"{h}/readyz", ctype=None, Host="avatar.example:8080"))[0]
            out["ip_host"] = (await _req("GET", f"{h}/readyz", ctype=None, Host="10.1.2.3:8080"))[0]
            out["rebind_ws"] = await _ws_rebind(server)
            client = await _call(server)
            url = f"{h}{client.location}"
            out["say_text_plain"] = (await _req("POST", f"{url}/say", body="hello", ctype="text/plain"))[0]
            out["say_form"] = (await _req("POST", f"{url}/say", body="text=hi",
                                          ctype="application/x-www-form-urlencoded"))[0]
            out["interrupt_empty"] = (await _req("POST", f"{url}/interrupt", body=None, ctype=None))[0]
            out["say_foreign_origin"] = (await _req("POST", f"{url}/say", body={"text": "Hi."},
                                                    Origin="http://evil.example"))[0]
            out["say_own_origin"] = (await _req("POST", f"{url}/say", body={"text": "Hi."}, Origin=h))[0]
            out["delete_foreign_origin"] = (await _req("DELETE", url, ctype=None, Origin="https://evil.example"))[0]
            out["still_there"] = (await _req("GET", url, ctype=None))[0]
            await client.close()
            return out

    out = asyncio.run(scenario())
    assert out["evil_host"] == 400 and out["allowed_host"] == 200 and out["ip_host"] == 200, out
    assert " 400 " in out["rebind_ws"], out
    assert out["say_text_plain"] == 415 and out["say_form"] == 415 and out["interrupt_empty"] == 415, out
    assert out["say_foreign_origin"] == 403 and out["delete_foreign_origin"] == 403, out
    assert out["say_own_origin"] == 202 and out["still_there"] == 200, out


async def _ws_rebind(server: Server) -> str:
    """A websocket upgrade as a rebinding page sends it: Host and Origin both evil.example;
    the status line of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /v1/stream HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://evil.example\r\n"
                 b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    await writer.drain()
    status = (await reader.readline()).decode()
    writer.close()
    return status.strip()


def test_one_auth_rule_for_every_route_and_maintenance_behind_the_token() -> None:
    """Was: the call API refused `bearer T` (lowercase scheme) that the websocket took, and
    took a wrong header when ?token= was right, which the websocket refused; /healthz?trim=1
    (a full heap trim) was open to anyone."""
    async def scenario() -> dict[str, Any]:
        async with running_server(**CALL, token="s3cret") as server:
            h, out = server.http, {}
            client = CallClient(h, wav=None, keep_video=False)
            client.pc.addTransceiver("audio", direction="recvonly")
            client.pc.addTransceiver("video", direction="recvonly")
            await client.pc.setLocalDescription(await client.pc.createOffer())
            sdp = client.pc.localDescription.sdp
            out["no_token"] = (await _req("POST", f"{h}/v1/calls", body=sdp, ctype="application/sdp"))[0]
            out["wrong_header_right_query"] = (await _req("POST", f"{h}/v1/calls?token=s3cret", body=sdp,
                                                          ctype="application/sdp", Authorization="Bearer nope"))[0]
            status, _, headers = await _req("POST", f"{h}/v1/calls", body=sdp, ctype="application/sdp",
                                            Authorization="bearer s3cret")
            out["lowercase_scheme"] = status
            location = headers.get("Location", "")
            out["stats_query_token"] = (await _req("GET", f"{h}{location}?token=s3cret", ctype=None))[0]
            for label, kwargs in (("ws_wrong_header_right_query", {"additional_headers": {"Authorization": "Bearer x"}}),
                                  ("ws_lowercase", {"additional_headers": {"Authorization": "BEARER s3cret"}})):
                url = server.url + ("?token=s3cret" if label.startswith("ws_wrong") else "")
                try:
                    async with connect(url, max_size=None, **kwargs) as ws:
                        await ws.send(json.dumps({"type": "config"}))
                        out[label] = "open" if isinstance(SERVER_EVENTS.validate_json(await ws.recv()), Ready) else "?"
                except Exception as exc:  # noqa: BLE001 - the refusal is what we look at
                    out[label] = str(exc)
            out["health"] = (await _req("GET", f"{h}/healthz", ctype=None))[0]
            out["trim_no_token"] = (await _req("GET", f"{h}/healthz?trim=1", ctype=None))[0]
            out["tasks_no_token"] = (await _req("GET", f"{h}/healthz?tasks=1", ctype=None))[0]
            out["trim_token"] = (await _req("GET", f"{h}/healthz?trim=1", ctype=None, Authorization="Bearer s3cret"))[0]
            trims0 = server.app[_trimmer_key()].trims
            many = await asyncio.gather(*(_req("GET", f"{h}/healthz?trim=1&token=s3cret", ctype=None)
                                          for _ in range(40)))
            out["many_trims"] = [m[0] for m in many]
            out["trims_done"] = server.app[_trimmer_key()].trims - trims0
            await _req("DELETE", f"{h}{location}", ctype=None, Authorization="Bearer s3cret")
            await client.pc.close()
            return out

    out = asyncio.run(scenario())
    assert out["no_token"] == 401 and out["wrong_header_right_query"] == 401, out
    assert out["lowercase_scheme"] == 201 and out["stats_query_token"] == 200, out
    assert "401" in out["ws_wrong_header_right_query"] and out["ws_lowercase"] == "open", out
    assert out["health"] == 200 and out["trim_no_token"] == 401 and out["tasks_no_token"] == 401, out
    assert out["trim_token"] == 200 and set(out["many_trims"]) == {200}, out
    assert out["trims_done"] <= 3, out  # 40 at once share one or two trims


def test_say_ids_voices_and_texts_are_checked_up_front() -> None:
    """Was: a 200 KB id and markup were accepted and echoed back; unknown voices and
    punctuation-only text got 202."""
    async def scenario() -> list[tuple[int, str]]:
        async with running_server(**CALL) as server:
            client = await _call(server)
            url = f"{server.http}{client.location}/say"
            out = []
            for body in ({"text": "Hi.", "id": "x" * 200_000}, {"text": "Hi.", "id": "<script>alert(1)</script>"},
                         {"text": "Hi.", "voice": "klingon"}, {"text": "?!... --"}, {"text": "   "},
                         {"text": "Hi.", "id": "ok-1"}, {"text": "Again.", "id": "ok-1"}):
                status, resp, _ = await _req("POST", url, body=body)
                out.append((status, json.dumps(resp)))
            await client.close()
            return out

    out = asyncio.run(scenario())
    statuses = [s for s, _ in out]
    assert statuses == [400, 400, 400, 400, 400, 202, 409], out
    assert all(len(text) < 400 and "<script>" not in text for _, text in out), out  # nothing echoed back
    assert "id" in out[0][1] and "voice" in out[2][1] and "nothing to say" in out[3][1]


def test_tokens_never_reach_the_log() -> None:
    """Was: a request line over 8 KB was logged at ERROR with its first ~100 bytes, `?token=`
    included. The server runs as `avatar serve` and its own log is read."""
    log: list[str] = []

    async def run() -> tuple[str, int]:
        async with server_process(**CALL, preload=False, token="hunter2-secret", _log=log) as http:
            port = int(http.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"GET /v1/calls/x?token=hunter2-secret&pad=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                reply = s.recv(200)
            await _req("GET", f"{http}/healthz?token=hunter2-secret&trim=1", ctype=None)
            await _req("GET", f"{http}/v1/calls/nope", ctype=None, Authorization="Bearer hunter2-secret")
            await asyncio.sleep(1.0)
        return "".join(log), int(reply.split()[1])

    text, status = asyncio.run(run())
    assert status in (400, 414, 431), status
    assert "hunter2" not in text, text[-2000:]
    assert "bad request from 127.0.0.1: 400 Got more than 8190 bytes" in text, text[-2000:]  # one line ...
    assert "token=***" in text and "Traceback" not in text, text[-2000:]  # ... scrubbed


def _calls_key() -> Any:
    from web.calls.routes import CALLS

    return CALLS


def _trimmer_key() -> Any:
    from web.health import TRIMMER

    return TRIMMER
