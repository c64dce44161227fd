"""WHIP-shaped signaling (RFC 9725) and call control over HTTP.

    POST   /v1/calls[?mode=agent|mirror]   body: SDP offer (application/sdp)
           -> 201 Created, Location: /v1/calls/{id}, body: SDP answer (application/sdp)
    DELETE /v1/calls/{id}                   -> 200; 404 for an unknown (or already ended) call
    POST   /v1/calls/{id}/say               {"text": "...", "voice": "..."} -> 202 {"utterance_id"}
    POST   /v1/calls/{id}/interrupt         -> 200
    POST   /v1/calls/{id}/mode              {"mode": "mirror"} -> 200
    GET    /v1/calls/{id}                   -> 200 call stats (JSON)

Errors are JSON {"error": code, "message": ...} with a 4xx status (web/requests.py); over the
call limit, and while the server stops, the answer is 503 with Retry-After. Every field's
rule is in web/limits.py.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import web

from ..limits import MAX_JSON_BODY_BYTES
from ..requests import ApiError, json_body, query, read_body, require_type
from .call import Call, OfferError, check_offer
from .feed import PerceptionFeed
from .protocol import Accepted, CallStats, CreateQuery, Interrupt, PerceptionStats, Say, SetMode, StatsQuery

log = logging.getLogger(__name__)
CALLS = web.AppKey("calls", dict)


class CallRegistry:
    def __init__(self, settings: Any, engines: Any, metrics: Any) -> None:
        self.settings, self.engines, self.metrics = settings, engines, metrics
        self.calls: dict[str, Call] = {}
        self._pending = 0  # calls being set up, counted against the limit
        self.draining = False  # stopping: new calls are refused (503)
        self.feed = PerceptionFeed()  # GET /v1/perception

    def _closed(self, call: Call) -> None:
        self.calls.pop(call.id, None)

    async def create(self, offer: str, mode: str) -> tuple[Call, str]:
        call = Call(uuid.uuid4().hex[:12], engines=self.engines, settings=self.settings, metrics=self.metrics,
                    mode=mode, on_closed=self._closed)  # type: ignore[arg-type]
        call.perception_feed = self.feed.publish
        self._pending += 1
        try:
            answer = await call.accept(offer)
        except BaseException:
            await call.close("setup failed")
            raise
        finally:
            self._pending -= 1
        self.calls[call.id] = call
        return call, answer

    def full(self) -> bool:
        return len(self.calls) + self._pending >= self.settings.max_calls

    async def close_all(self) -> None:
        await asyncio.gather(*(c.close("server stopping") for c in list(self.calls.values())),
                             return_exceptions=True)


async def create_call(request: web.Request) -> web.StreamResponse:
    reg: CallRegistry = request.app[CALLS]["registry"]
    s = reg.settings
    require_type(request, "application/sdp")
    q = query(request, CreateQuery)
    body = await read_body(request, s.max_sdp_bytes)
    try:
        offer = body.decode("utf-8")
        check_offer(offer, max_bytes=s.max_sdp_bytes)
    except UnicodeDecodeError:
        raise ApiError(400, "bad_offer", "the SDP offer is not UTF-8 text") from None
    except OfferError as exc:
        raise ApiError(400, "bad_offer", str(exc)) from None
    if reg.draining:
        raise ApiError(503, "draining", "the server is draining or stopping; call another one",
                       **{"Retry-After": str(s.retry_after_s)})
    if reg.full():
        raise ApiError(503, "busy", f"{s.max_calls} calls already running", **{"Retry-After": str(s.retry_after_s)})
    try:
        call, answer = await reg.create(offer, q.mode)
    except ValueError as exc:
        raise ApiError(400, "bad_offer", f"cannot answer this offer: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - aiortc raises assorted errors on odd SDP
        log.info("offer rejected: %s", exc)
        raise ApiError(400, "bad_offer", f"cannot answer this offer: {type(exc).__name__}: {exc}") from None
    return web.Response(status=201, text=answer, content_type="application/sdp",
                        headers={"Location": f"{s.public_url or ''}/v1/calls/{call.id}"})


def _call(request: web.Request) -> Call:
    reg: CallRegistry = request.app[CALLS]["registry"]
    call = reg.calls.get(request.match_info["call_id"])
    if call is None:
        raise ApiError(404, "unknown_call", "no such call (it may have ended)")
    return call


async def delete_call(request: web.Request) -> web.StreamResponse:
    call = _call(request)
    await call.close("deleted by the client")
    return web.json_response({"ended": call.id})


async def say(request: web.Request) -> web.StreamResponse:
    call = _call(request)
    msg = await json_body(request, Say, limit=MAX_JSON_BODY_BYTES)
    uid = await call.say(msg.text, msg.voice, msg.id)
    return web.json_response(Accepted(utterance_id=uid, expected_wait_s=call.last_wait).model_dump(exclude_none=True),
                             status=202)


async def interrupt(request: web.Request) -> web.StreamResponse:
    call = _call(request)
    await json_body(request, Interrupt, limit=MAX_JSON_BODY_BYTES, empty_ok=True)
    call.interrupt("client")
    return web.json_response({"interrupted": True})


async def set_mode(request: web.Request) -> web.StreamResponse:
    call = _call(request)
    msg = await json_body(request, SetMode, limit=MAX_JSON_BODY_BYTES)
    call.set_mode(msg.mode)
    return web.json_response({"mode": msg.mode})


async def call_stats(request: web.Request) -> web.StreamResponse:
    call = _call(request)
    window = query(request, StatsQuery).window
    lat = sorted(call.engine_latency(window)) if call.mode == "mirror" else []
    jitter = sorted(call.mic_jitter(window))

    def pct(xs: list[float], q: float) -> float | None:
        return round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 1) if xs else None

    stats = CallStats(
        latency_p50_ms=pct(lat, 0.5), latency_p99_ms=pct(lat, 0.99),
        mic_jitter_p50_ms=pct(jitter, 0.5), mic_jitter_p99_ms=pct(jitter, 0.99),
        id=call.id, mode=call.mode, state=call.pc.connectionState, speaking=call.speaking,
        av_offset_ms=round(call.av_offset_s * 1000, 1),
        video_released=call.video_track.released, audio_released=call.audio_track.released,
        mic_frames=call.mic.frames, **call.mirror_counts(),
        barge_in_reaction_ms=[round(1000 * x) for x in call.barge_ins], queued_utterances=len(call.queued),
        perception=None if call.perception is None else PerceptionStats(
            camera_frames=call.perception.frames_in, perceived_frames=call.perception.frames_perceived,
            cpu_s=round(call.perception.cpu_s, 3), error=call.perception.error))
    return web.json_response(stats.model_dump())


async def ice_servers(request: web.Request) -> web.Response:
    """What a caller's peer connection is configured with (RTCConfiguration.iceServers)."""
    reg: CallRegistry = request.app[CALLS]["registry"]
    servers = [srv.model_dump(exclude_none=True) for srv in reg.settings.ice_servers]
    return web.json_response({"iceServers": servers}, headers={"Cache-Control": "no-store"})


def add_call_routes(app: web.Application, registry: CallRegistry) -> None:
    app[CALLS] = {"registry": registry}
    app.router.add_get("/v1/ice-servers", ice_servers)
    app.router.add_post("/v1/calls", create_call)
    app.router.add_delete("/v1/calls/{call_id}", delete_call)
    app.router.add_get("/v1/calls/{call_id}", call_stats)
    app.router.add_post("/v1/calls/{call_id}/say", say)
    app.router.add_post("/v1/calls/{call_id}/interrupt", interrupt)
    app.router.add_post("/v1/calls/{call_id}/mode", set_mode)
    app.router.add_get("/v1/perception", registry.feed.handler)
    app.on_shutdown.append(_shutdown)


async def _shutdown(app: web.Application) -> None:
    await app[CALLS]["registry"].close_all()
