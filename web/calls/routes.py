"""WHIP-shaped signaling (RFC 9725) and call control over HTTP.

    POST   /v1/calls[?mode=agent|mirror]   body: SDP offer (application/sdp)
           -> 201 Created, Location: /v1/calls/{id}, body: SDP answer (application/sdp)
    DELETE /v1/calls/{id}                   -> 200; 404 for an unknown (or already ended) call
    POST   /v1/calls/{id}/say               {"text": "...", "voice": "..."} -> 202 {"utterance_id"}
    POST   /v1/calls/{id}/interrupt         -> 200
    POST   /v1/calls/{id}/mode              {"mode": "mirror"} -> 200
    GET    /v1/calls/{id}                   -> 200 call stats (JSON)

Errors are JSON {"error": code, "message": ...} with a 4xx status; over the call limit the
answer is 503 with Retry-After.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from .call import Call, OfferError, check_offer
from .protocol import Say, SetMode

log = logging.getLogger(__name__)
CALLS = web.AppKey("calls", dict)


def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


class CallRegistry:
    def __init__(self, settings: Any, engines: Any, metrics: Any) -> None:
        self.settings, self.engines, self.metrics = settings, engines, metrics
        self.calls: dict[str, Call] = {}
        self._pending = 0  # calls being set up, counted against the limit

    def _closed(self, call: Call) -> None:
        self.calls.pop(call.id, None)

    async def create(self, offer: str, mode: str) -> tuple[Call, str]:
        call = Call(uuid.uuid4().hex[:12], engines=self.engines, settings=self.settings, metrics=self.metrics,
                    mode=mode, on_closed=self._closed)  # type: ignore[arg-type]
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
    ctype = request.content_type
    if ctype != "application/sdp":
        return _error(415, "unsupported_media_type", f"send the SDP offer as application/sdp, not {ctype or 'nothing'}")
    if request.content_length is not None and request.content_length > s.max_sdp_bytes:
        return _error(413, "too_large", f"SDP offer over {s.max_sdp_bytes} bytes")
    mode = request.query.get("mode", "agent")
    if mode not in ("agent", "mirror"):
        return _error(400, "bad_mode", "mode must be 'agent' or 'mirror'")
    try:
        body = await request.content.read(s.max_sdp_bytes + 1)
        offer = body.decode("utf-8")
        check_offer(offer, max_bytes=s.max_sdp_bytes)
    except UnicodeDecodeError:
        return _error(400, "bad_offer", "the SDP offer is not UTF-8 text")
    except OfferError as exc:
        status = 413 if "over the limit" in str(exc) else 400
        return _error(status, "bad_offer", str(exc))
    if reg.full():
        return _error(503, "busy", f"{s.max_calls} calls already running", **{"Retry-After": str(s.retry_after_s)})
    try:
        call, answer = await reg.create(offer, mode)
    except ValueError as exc:
        return _error(400, "bad_offer", f"cannot answer this offer: {exc}")
    except Exception as exc:  # noqa: BLE001 - aiortc raises assorted errors on odd SDP
        log.info("offer rejected: %s", exc)
        return _error(400, "bad_offer", f"cannot answer this offer: {type(exc).__name__}: {exc}")
    return web.Response(status=201, text=answer, content_type="application/sdp",
                        headers={"Location": f"/v1/calls/{call.id}"})


def _call(request: web.Request) -> Call | None:
    reg: CallRegistry = request.app[CALLS]["registry"]
    return reg.calls.get(request.match_info["call_id"])


async def delete_call(request: web.Request) -> web.StreamResponse:
    call = _call(request)
    if call is None:
        return _error(404, "unknown_call", "no such call (it may have ended)")
    await call.close("deleted by the client")
    return web.json_response({"ended": call.id})


async def _json(request: web.Request, model: Any) -> Any:
    if request.content_length is not None and request.content_length > 1_000_000:
        raise web.HTTPRequestEntityTooLarge(max_size=1_000_000, actual_size=request.content_length)
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        err = exc.errors()[0]
        raise web.HTTPBadRequest(text=f'{{"error": "bad_request", "message": "{err["loc"]}: {err["msg"]}"}}',
                                 content_type="application/json") from None


async def say(request: web.Request) -> web.StreamResponse:
    call = _call(request)
    if call is None:
        return _error(404, "unknown_call", "no such call")
    msg = await _json(request, Say)
    try:
        uid = call.say(msg.text, msg.voice, msg.id)
    except ValueError as exc:
        return _error(400, "bad_text", str(exc))
    return web.json_response({"utterance_id": uid}, status=202)


async def interrupt(request: web.Request) -> web.StreamResponse:
    call = _call(request)
    if call is None:
        return _error(404, "unknown_call", "no such call")
    call.interrupt("client")
    return web.json_response({"interrupted": True})


async def set_mode(request: web.Request) -> web.StreamResponse:
    call = _call(request)
    if call is None:
        return _error(404, "unknown_call", "no such call")
    msg = await _json(request, SetMode)
    call.set_mode(msg.mode)
    return web.json_response({"mode": msg.mode})


async def call_stats(request: web.Request) -> web.StreamResponse:
    call = _call(request)
    if call is None:
        return _error(404, "unknown_call", "no such call")
    window = int(request.query.get("window", "1500"))  # chunks (20 ms each)
    lat = sorted(call.engine_latency(window)) if call.mode == "mirror" else []
    jitter = sorted(call.mic_jitter(window))

    def pct(xs: list[float], q: float) -> float | None:
        return round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 1) if xs else None

    return web.json_response({
        "latency_p50_ms": pct(lat, 0.5), "latency_p99_ms": pct(lat, 0.99),
        "mic_jitter_p50_ms": pct(jitter, 0.5), "mic_jitter_p99_ms": pct(jitter, 0.99),
        "id": call.id, "mode": call.mode, "state": call.pc.connectionState, "speaking": call.speaking,
        "av_offset_ms": round(call.av_offset_s * 1000, 1),
        "video_released": call.video_track.released, "audio_released": call.audio_track.released,
        "mic_frames": call.mic.frames, **call.mirror_counts(),
        "barge_in_reaction_ms": [round(1000 * x) for x in call.barge_ins],
    })


def add_call_routes(app: web.Application, registry: CallRegistry) -> None:
    app[CALLS] = {"registry": registry}
    app.router.add_post("/v1/calls", create_call)
    app.router.add_delete("/v1/calls/{call_id}", delete_call)
    app.router.add_get("/v1/calls/{call_id}", call_stats)
    app.router.add_post("/v1/calls/{call_id}/say", say)
    app.router.add_post("/v1/calls/{call_id}/interrupt", interrupt)
    app.router.add_post("/v1/calls/{call_id}/mode", set_mode)
    app.on_shutdown.append(_shutdown)


async def _shutdown(app: web.Application) -> None:
    await app[CALLS]["registry"].close_all()
