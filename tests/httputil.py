"""One HTTP request as the API tests make it: (status, JSON body or {"text": ...}, headers)."""
from __future__ import annotations

import json
from typing import Any

import aiohttp

_UNSET: Any = object()


async def request(method: str, url: str, *, body: Any = None, ctype: str | None = _UNSET,
                  **headers: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A dict body goes as JSON (application/json unless `ctype` says otherwise); `ctype=None`
    sends no Content-Type at all."""
    hdrs = dict(headers)
    if ctype is _UNSET:
        ctype = "application/json" if isinstance(body, dict) else None
    if ctype is not None:
        hdrs["Content-Type"] = ctype
    data = json.dumps(body) if isinstance(body, dict) else body
    async with aiohttp.ClientSession() as s, s.request(method, url, data=data, headers=hdrs) as r:
        text = await r.text()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = {"text": text}
        return r.status, parsed, dict(r.headers)
