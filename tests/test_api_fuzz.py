"""Claim: no input reaches a 5xx or an unhandled exception — the HTTP API, as its published
OpenAPI document (/v1/openapi.json) describes it, fuzzed with schemathesis (positive and
negative cases, responses checked against the document), and the websocket protocol fuzzed
with hypothesis (valid, near-valid and garbage messages). The server is healthy afterwards.
Bounded example counts: a few minutes in all."""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from web.stream.protocol import SERVER_EVENTS, Error

from callutil import started_server
from test_hardening import _offer_that_never_connects
from wsutil import running_server

CALL = {"call_size": 256, "sizes": [256], "size": 256, "voice": "en-us"}
# What a bug looks like in the server's log (aiohttp logs a handler's exception this way).
BUG = re.compile(r"Traceback|Error handling request|Unhandled exception|Task exception was never retrieved")


def _bugs(log: list[str]) -> list[str]:
    text = "".join(log)
    return [m.group(0) + text[m.start():m.start() + 600] for m in BUG.finditer(text)]


def test_the_openapi_document_is_served_and_valid() -> None:
    async def scenario() -> dict[str, Any]:
        async with running_server(preload=False) as server, aiohttp.ClientSession() as s:
            async with s.get(f"{server.http}/v1/openapi.json") as r:
                assert r.status == 200
                return await r.json()

    doc = asyncio.run(scenario())
    validate(doc)  # OpenAPI 3.1, by openapi-spec-validator
    assert {"/v1/calls", "/v1/calls/{call_id}", "/v1/calls/{call_id}/say", "/healthz"} <= set(doc["paths"])
    say = doc["components"]["schemas"]["Say"]["properties"]
    assert say["voice"]["anyOf"][0]["pattern"] and say["id"]["anyOf"][0]["pattern"]


@pytest.mark.timeout(900)
def test_the_http_api_survives_schemathesis(tmp_path: Path) -> None:
    """A real call exists during the run: its id is one of the values the fuzzer may put in
    {call_id} (DELETE aside, so it lives to the end); the others are random."""
    async def scenario() -> tuple[int, str, list[str], int, int]:
        async with started_server(**CALL, call_connect_timeout_s=900, call_peer_timeout_s=900) as server:
            pc, sdp = await _offer_that_never_connects()
            async with aiohttp.ClientSession() as s:
                async with s.post(f"{server.http}/v1/calls", data=sdp, headers={"Content-Type": "application/sdp"}) as r:
                    assert r.status == 201
                    call_id = r.headers["Location"].rsplit("/", 1)[1]
                async with s.get(f"{server.http}/v1/openapi.json") as r:
                    doc = await r.json()
            for path, ops in doc["paths"].items():
                for method, op in ops.items():
                    for p in op.get("parameters", []):
                        if p["name"] == "call_id":
                            ids = ["no-such-call"] if method == "delete" else [call_id, "no-such-call"]
                            p["schema"] = {"type": "string", "enum": ids}
            spec = tmp_path / "openapi.json"
            spec.write_text(json.dumps(doc))
            cmd = [str(Path(sys.executable).parent / "schemathesis"), "run", str(spec), "--url", server.http,
                   "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                               "response_schema_conformance,negative_data_rejection",
                   "--max-examples", "40", "--seed", "7", "--generation-database", "none",
                   "--phases", "examples,coverage,fuzzing", "--workers", "1", "--no-color",
                   "--request-timeout", "20", "--suppress-health-check", "all", "--mode", "all"]
            env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
                   "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
            proc = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=800, env=env,
                                         cwd=tmp_path)  # its cache and reports stay out of the checkout
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{server.http}/healthz") as r:
                    health = r.status
                async with s.get(f"{server.http}/v1/calls/{call_id}") as r:
                    alive = r.status
            await pc.close()
            await asyncio.sleep(0.5)
            return proc.returncode, proc.stdout[-6000:] + proc.stderr[-2000:], _bugs(server.log), health, alive

    code, output, bugs, health, alive = asyncio.run(scenario())
    assert code == 0, output
    assert not bugs, bugs[:3]
    assert health == 200 and alive == 200


GARBAGE = st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=10)
TYPES = st.sampled_from(["config", "say", "append", "flush", "interrupt", "keyframe", "dance", ""])
FIELDS = st.fixed_dictionaries({}, optional={
    "text": st.one_of(st.text(max_size=80), st.integers(), st.none()),
    "voice": st.one_of(st.sampled_from(["en-us", "joe", "de+f3", "klingon", "", "x" * 70, "en-us+nope"]), st.text(max_size=10)),
    "id": st.one_of(st.text(max_size=70), st.integers()),
    "size": st.one_of(st.sampled_from([128, 256, 512, 0, -1, 2**40]), st.text(max_size=4)),
    "fps": st.integers(-5, 100), "seed": st.integers(-2**40, 2**40),
    "audio": st.sampled_from(["opus", "pcm", "mp3", None]), "avatar": st.text(max_size=70),
    "video": st.sampled_from(["h264", "vp9"]), "colour": st.text(max_size=5)})
MESSAGES = st.one_of(GARBAGE, JSON_VALUES.map(json.dumps),
                     st.builds(lambda t, f: json.dumps({"type": t, **f}), TYPES, FIELDS))


def test_the_stream_protocol_survives_hypothesis() -> None:
    """Each example: a fresh connection gets a sequence of messages; every text it receives
    must be a valid server event, and it must not be closed with 1011 (a failed session) —
    only with codes the protocol documents for what was sent."""
    loop = asyncio.new_event_loop()
    holder: dict[str, Any] = {}
    ctx = running_server(**{**CALL, "messages_per_second": 1000, "message_burst": 1000})
    holder["server"] = loop.run_until_complete(ctx.__aenter__())
    seen: dict[str, int] = {}

    async def one(messages: list[str]) -> None:
        server = holder["server"]
        async with connect(server.url, max_size=None) as ws:
            for m in messages:
                await ws.send(m)
            await ws.send(json.dumps({"type": "interrupt"}))
            try:
                async with asyncio.timeout(0.3):  # what it answers comes at once; media is skipped
                    while True:
                        msg = await ws.recv()
                        if isinstance(msg, str):
                            event = SERVER_EVENTS.validate_json(msg)  # raises if not a documented event
                            if isinstance(event, Error):
                                assert not event.fatal, event
                                seen[event.code.value] = seen.get(event.code.value, 0) + 1
            except TimeoutError:
                pass
            except ConnectionClosed:
                assert ws.close_code in (1000, 1008, 1009), ws.close_code

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.lists(MESSAGES, min_size=1, max_size=6))
    def run(messages: list[str]) -> None:
        loop.run_until_complete(one(messages))

    try:
        run()

        async def healthy() -> bool:
            server = holder["server"]
            async with connect(server.url, max_size=None) as ws:
                await ws.send(json.dumps({"type": "say", "text": "Still fine.", "id": "ok"}))
                async with asyncio.timeout(20):
                    while True:
                        msg = await ws.recv()
                        if isinstance(msg, str) and '"done"' in msg:
                            return True
        assert loop.run_until_complete(healthy())
        assert not server_failures(holder["server"]), server_failures(holder["server"])
    finally:
        loop.run_until_complete(ctx.__aexit__(None, None, None))
        loop.close()
    assert {"invalid_json", "invalid_message", "unknown_type"} <= set(seen), seen  # the fuzz reached them


def server_failures(server: Any) -> float:
    m = server.state.metrics
    return sum(s.value for metric in m.registry.collect() if metric.name == "avatar_session_failures"
               for s in metric.samples if s.name.endswith("_total"))
