"""Who may ask the server for what: hosts, origins, the bearer token, and what reaches the log.

Every request passes `edge_middleware` before any handler runs:

1. **Host** must be on the allow-list (DNS rebinding: a page on `evil.example` that resolves
   to this server sends `Host: evil.example`, and its Origin matches that Host). Allowed:
   loopback names, the address the server is bound to, any IP literal (an address typed as
   a number cannot be rebound to another name), and `allowed_hosts` (`AVATAR_ALLOWED_HOSTS`;
   `.example.com` also allows its subdomains, `*` anything). Otherwise 400.
2. **Token** (when `token` is set) on the API (`/v1/calls…`, `/v1/stream`) and on the
   maintenance parameters of `/healthz` (`trim`, `tasks`): `Authorization: Bearer <token>`
   (scheme in any case) and/or `?token=<token>`; every credential given must be right and at
   least one must be given. Pages, `/healthz`, `/readyz`, `/metrics` and the schemas stay
   open. Without a token, maintenance is open to loopback clients only.
3. **Origin** on requests that change state (POST, DELETE, PUT, PATCH) and on the websocket
   upgrade: a browser's Origin must be this server's own or in `allowed_origins`. Requests
   without Origin are not from browsers and pass. With the Host check this also stops
   rebinding; the content types the handlers require (application/sdp, application/json)
   make every state change one a browser must preflight.

`TokenScrubber` removes tokens from log lines: the HTTP library logs the start of a request
line it cannot parse (an over-long URL), query string included.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .settings import ServerSettings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
STATE_CHANGING = frozenset({"POST", "DELETE", "PUT", "PATCH"})
PROTECTED_PREFIXES = ("/v1/calls", "/v1/stream", "/v1/ice-servers")  # TURN credentials are secrets too
OPEN_PATHS = frozenset({"/v1/stream/schema"})
MAINTENANCE_PARAMS = ("trim", "tasks")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    """The one error shape of the HTTP API: JSON {"error": code, "message": ...}."""
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def _hostname(host: str) -> str:
    """'Example.COM:8080' -> 'example.com'; '[::1]:80' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(host: str | None, settings: ServerSettings) -> bool:
    if not host:
        return False  # HTTP/1.1 requires Host; aiohttp fills in the socket's address for 1.0
    name = _hostname(host)
    if name in LOOPBACK_NAMES or name.endswith(".localhost") or _is_ip(name):
        return True
    if name == _hostname(settings.host):
        return True
    for allowed in settings.allowed_hosts:
        allowed = allowed.strip().lower()
        if allowed == "*" or name == allowed or (allowed.startswith(".") and
                                                 (name.endswith(allowed) or name == allowed[1:])):
            return True
    return False


def origin_allowed(request: web.Request, allowed: list[str]) -> bool:
    """No Origin (not a browser), the server's own origin, or one listed ('*': any)."""
    origin = request.headers.get("Origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    return urlsplit(origin).netloc.lower() == request.host.lower()


_BEARER = re.compile(r"^\s*bearer\s+(\S+)\s*$", re.IGNORECASE)


def authorized(request: web.Request, token: str | None) -> bool:
    """The bearer token, from the Authorization header and/or `?token=` (browsers cannot set
    headers on a websocket): all given must match, at least one must be given. Constant time."""
    if not token:
        return True
    given: list[str] = []
    header = request.headers.get("Authorization")
    if header is not None:
        m = _BEARER.match(header)
        given.append(m.group(1) if m else "")
    if "token" in request.query:
        given.append(request.query.get("token", ""))
    expected = token.encode()
    results = [hmac.compare_digest(g.encode(), expected) for g in given]  # no short cut: same time
    return bool(results) and all(results)


def _loopback_peer(request: web.Request) -> bool:
    remote = request.remote or ""
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return remote == ""  # a unix socket or a test client


def needs_token(request: web.Request) -> bool:
    path = request.path
    if path in OPEN_PATHS:
        return False
    return path.startswith(PROTECTED_PREFIXES) or is_maintenance(request)


def is_maintenance(request: web.Request) -> bool:
    return request.path == "/healthz" and any(request.query.get(p) not in (None, "0") for p in MAINTENANCE_PARAMS)


def make_edge_middleware(settings: ServerSettings) -> Any:
    @web.middleware
    async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host"), settings):
            return error(400, "bad_host", "this server does not answer for that Host "
                                          "(add it to AVATAR_ALLOWED_HOSTS)")
        if needs_token(request):
            if settings.token and not authorized(request, settings.token):
                return error(401, "unauthorized", "missing or wrong bearer token",
                             **{"WWW-Authenticate": 'Bearer realm="avatar"'})
            if not settings.token and is_maintenance(request) and not _loopback_peer(request):
                return error(403, "forbidden", "maintenance parameters are for loopback clients "
                                               "or need the server's token")
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if (request.method in STATE_CHANGING or upgrade) and not origin_allowed(request, settings.allowed_origins):
            return error(403, "forbidden_origin",
                         f"origin {request.headers.get('Origin', '')[:200]!r} is not allowed")
        return await handler(request)

    return edge_middleware


class TokenScrubber(logging.Filter):
    """Replaces tokens in a log record's text (message, arguments, traceback) by `***`:
    `token=…` in URLs, `Bearer …` in headers, and the server's token wherever it appears."""

    _PATTERNS = (re.compile(r"(token=)[^&\s'\"\\]+", re.IGNORECASE),
                 re.compile(r"(bearer\s+)[^\s'\"\\]+", re.IGNORECASE))

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self.token = token

    def scrub(self, text: str) -> str:
        for p in self._PATTERNS:
            text = p.sub(r"\1***", text)
        if self.token:
            text = text.replace(self.token, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's problem, not ours
            return True
        record.msg, record.args = self.scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


class QuietBadRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (bad header bytes, a broken request line, TLS
    spoken to plain HTTP) at ERROR with its parser's traceback, though it answers 400 and the
    fault is the client's. One INFO line instead, as web servers do; real errors untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            what = " ".join(str(exc.message).replace("^", " ").split())[:200]
            said = record.getMessage().replace("Error handling request", "bad request")
            record.msg, record.args = f"{said}: {exc.code} {what}", None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def install_log_scrubber(token: str | None, logger: logging.Logger | None = None) -> TokenScrubber:
    """On every handler of `logger` (the root logger): records of every library pass them.
    Also quiets the HTTP library's reports of unparseable requests (QuietBadRequests)."""
    scrubber = TokenScrubber(token)
    root = logger or logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    for h in root.handlers:
        h.addFilter(scrubber)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietBadRequests) for f in server_log.filters):
        server_log.addFilter(QuietBadRequests())
    return scrubber
