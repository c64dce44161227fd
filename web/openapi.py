"""The HTTP API as an OpenAPI 3.1 document, built from the same pydantic models the handlers
validate with (web/calls/protocol.py, web/health.py, web/limits.py), served at
`/v1/openapi.json` and fuzzed by the test suite (tests/test_api_fuzz.py). The websocket
protocol has its own schema at `/v1/stream/schema` (docs/stream-protocol.md)."""
from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from .calls.protocol import Accepted, CallStats, Interrupt, Say, SetMode
from .health import Health, Ready
from .limits import MAX_JSON_BODY_BYTES, STATS_WINDOW

REF = "#/components/schemas/{model}"


class ErrorBody(BaseModel):
    error: str
    message: str


def _schemas(*models: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in models:
        schema = m.model_json_schema(ref_template=REF)
        out.update(schema.pop("$defs", {}))
        out[m.__name__] = schema
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json("ErrorBody")}


COMMON = {"400": _err("a malformed request (Host, query, body), named in `message`"),
          "401": _err("the server has a token and the request lacks it"),
          "403": _err("a browser Origin that is not allowed, or maintenance from afar")}
CALL_ID = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}
BEARER = [{"bearer": []}]


def _json_body(name: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}},
            "description": f"JSON, at most {MAX_JSON_BODY_BYTES} bytes"}


def _control(summary: str, body: str, ok: dict[str, Any], *, required: bool = True,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"summary": summary, "security": BEARER, "parameters": [CALL_ID],
            "requestBody": _json_body(body, required=required),
            "responses": {**ok, **COMMON, "404": _err("no such call (it may have ended)"),
                          "413": _err("body over the limit"), "415": _err("not application/json"),
                          **(extra or {})}}


@functools.cache
def openapi_document(secured: bool = False) -> dict[str, Any]:
    """`secured`: the server has a token, and the API operations say they need it."""
    sdp = {"application/sdp": {"schema": {"type": "string"}}}
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "avatar-engine", "version": "1",
                 "description": "WebRTC calls with a talking avatar (WHIP-shaped, RFC 9725), health and "
                                "metrics. The websocket stream is described by /v1/stream/schema."},
        "components": {
            "schemas": _schemas(Say, Interrupt, SetMode, CallStats, Accepted, Health, Ready, ErrorBody),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "only when the server has a token (AVATAR_TOKEN); "
                                                          "?token= is accepted too"}},
        },
        "paths": {
            "/v1/ice-servers": {"get": {
                "summary": "the STUN/TURN servers a caller's peer connection should use (setting ice_servers)",
                "security": BEARER,
                "responses": {"200": {"description": "RTCConfiguration.iceServers", "content": {
                    "application/json": {"schema": {"type": "object", "required": ["iceServers"], "properties": {
                        "iceServers": {"type": "array", "items": {"type": "object", "required": ["urls"], "properties": {
                            "urls": {"type": "array", "items": {"type": "string"}},
                            "username": {"type": "string"}, "credential": {"type": "string"}}}}}}}}},
                    **COMMON},
            }},
            "/v1/calls": {"post": {
                "summary": "start a call: the SDP offer in, the SDP answer out",
                "security": BEARER,
                "parameters": [{"name": "mode", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["agent", "mirror"], "default": "agent"}}],
                "requestBody": {"required": True, "content": sdp,
                                "description": "the whole offer, ICE candidates gathered (no trickle)"},
                "responses": {
                    "201": {"description": "the call runs", "content": sdp,
                            "headers": {"Location": {"schema": {"type": "string"},
                                                     "description": "/v1/calls/{id}: the call's resource"}}},
                    **COMMON, "413": _err("offer over max_sdp_bytes"), "415": _err("not application/sdp"),
                    "503": {**_err("max_calls running, or the server is stopping"),
                            "headers": {"Retry-After": {"schema": {"type": "string"}}}}},
            }},
            "/v1/calls/{call_id}": {
                "get": {"summary": "call statistics", "security": BEARER,
                        "parameters": [CALL_ID, {"name": "window", "in": "query", "required": False,
                                                 "schema": {"type": "integer", "minimum": STATS_WINDOW[0],
                                                            "maximum": STATS_WINDOW[1], "default": 1500}}],
                        "responses": {"200": {"description": "statistics", "content": _json("CallStats")},
                                      **COMMON, "404": _err("no such call")}},
                "delete": {"summary": "end the call", "security": BEARER, "parameters": [CALL_ID],
                           "responses": {"200": {"description": "ended", "content": {"application/json": {
                               "schema": {"type": "object", "properties": {"ended": {"type": "string"}}}}}},
                               **COMMON, "404": _err("no such call")}},
            },
            "/v1/calls/{call_id}/say": {"post": _control(
                "queue text for the avatar to say", "Say",
                {"202": {"description": "queued", "content": _json("Accepted")}},
                extra={"409": _err("an utterance with this id is queued or speaking, or the call is ending"),
                       "503": {**_err("the speech engine is overloaded (first words would wait over speech_max_wait_s, or its "
                                   "speech already being given is over speech_max_lag_s behind)"),
                               "headers": {"Retry-After": {"schema": {"type": "string"}}}},
                       "429": {**_err("max_queued_utterances are queued"),
                               "headers": {"Retry-After": {"schema": {"type": "string"}}}}})},
            "/v1/calls/{call_id}/interrupt": {"post": _control(
                "stop speaking now, drop what is queued", "Interrupt",
                {"200": {"description": "interrupted", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"interrupted": {"type": "boolean"}}}}}}}, required=False)},
            "/v1/calls/{call_id}/mode": {"post": _control(
                "agent (says what it is told) or mirror (the caller's voice moves the lips)", "SetMode",
                {"200": {"description": "switched", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"mode": {"type": "string"}}}}}}})},
            "/healthz": {"get": {
                "summary": "liveness; trim and tasks are maintenance (token, or loopback without one)",
                "parameters": [{"name": p, "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["0", "1"]}} for p in ("trim", "tasks")],
                "responses": {"200": {"description": "alive", "content": _json("Health")}, **COMMON}}},
            "/readyz": {"get": {"summary": "readiness: engines loaded, room for a call, not stopping",
                                "responses": {"200": {"description": "ready", "content": _json("Ready")},
                                              "503": {"description": "not ready", "content": _json("Ready")},
                                              "400": COMMON["400"]}}},
            "/metrics": {"get": {"summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "text exposition format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}},
                                               "400": COMMON["400"]}}},
            "/v1/stream/schema": {"get": {"summary": "the websocket protocol's JSON Schema",
                                          "responses": {"200": {"description": "schema", "content": {
                                              "application/json": {"schema": {"type": "object"}}}},
                                              "400": COMMON["400"]}}},
            "/v1/openapi.json": {"get": {"summary": "this document",
                                         "responses": {"200": {"description": "OpenAPI 3.1", "content": {
                                             "application/json": {"schema": {"type": "object"}}}},
                                             "400": COMMON["400"]}}},
        },
    }
    if not secured:  # without a token nothing asks for one: say so, or clients (and fuzzers) expect 401s
        for ops in doc["paths"].values():
            for op in ops.values():
                op.pop("security", None)
                op["responses"].pop("401", None)
        del doc["components"]["securitySchemes"]
    return doc
