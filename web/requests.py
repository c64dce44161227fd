"""Reading what an HTTP client sends: bodies read whole (chunked or not) up to a limit, JSON
bodies and query strings validated by the models of web/limits.py, and one error type that
every handler raises and the middleware answers as JSON {"error", "message"} with its status."""
from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """A request the server refuses: `status` (4xx/503), a stable `code`, one-line `message`."""

    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def response(self) -> web.Response:
        return web.json_response({"error": self.code, "message": self.message}, status=self.status,
                                 headers=self.headers)


def describe(exc: ValidationError, *, skip: int = 0) -> str:
    """A pydantic error as one line naming the field(s): 'voice: String should match ...'."""
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(x) for x in e["loc"][skip:]) or "body"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body however it is sent (Content-Length or chunked, in any number of pieces);
    413 as soon as it is over `limit` bytes, before the rest is read."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"the body is {request.content_length} bytes, over the limit of {limit}")
    chunks, size = [], 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)


def require_type(request: web.Request, *types: str) -> None:
    """415 unless the body is declared as one of `types`. Requiring application/json or
    application/sdp also means a browser must ask first (CORS preflight) before it sends one
    cross-site: text/plain and form bodies are what a foreign page can post unasked."""
    if request.content_type not in types:
        raise ApiError(415, "unsupported_media_type",
                       f"send {' or '.join(types)}, not {request.content_type or 'nothing'}")


async def json_body(request: web.Request, model: type[M], *, limit: int, empty_ok: bool = False) -> M:
    require_type(request, "application/json")
    raw = await read_body(request, limit)
    if empty_ok and not raw.strip():
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(400, "bad_request", describe(exc)) from None


def query(request: web.Request, model: type[M]) -> M:
    values: dict[str, Any] = {k: request.query.getone(k) for k in request.query.keys()}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ApiError(400, "bad_query", describe(exc)) from None
