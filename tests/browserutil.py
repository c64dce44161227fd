"""Headless Chromium driven over the DevTools protocol (a websocket, `websockets` package):
no browser download, Debian's /usr/bin/chromium. Without it a test fails, saying how to
install it."""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

ARTIFACTS = Path(os.environ.get("AVATAR_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0"]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is needed for the player test: apt-get install -y chromium "
                    "(or set CHROMIUM=/path/to/chrome)", pytrace=False)
    return path


class Browser:
    """Just enough of the DevTools protocol: open a page, evaluate JavaScript in it."""

    def __init__(self, extra_flags: list[str] | None = None) -> None:
        self.extra_flags = extra_flags or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self._ids = itertools.count(1)
        self.ws: Any = None
        self.session: str | None = None

    async def start(self) -> None:
        self.proc = subprocess.Popen([chromium_path(), *CHROMIUM_FLAGS, *self.extra_flags,
                                      f"--user-data-dir={self.profile}",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        url = None
        async with asyncio.timeout(30):
            while url is None:
                line = (await asyncio.to_thread(self.proc.stderr.readline)).decode(errors="replace")
                if not line and self.proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with {self.proc.returncode}")
                m = re.search(r"DevTools listening on (ws://\S+)", line)
                url = m.group(1) if m else None
        self.ws = await connect(url, max_size=None, ping_interval=None)

    async def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> Any:
        ident = next(self._ids)
        msg: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        await self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    async def open(self, url: str) -> None:
        target = await self.call("Target.createTarget", {"url": url}, session=False)
        attached = await self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                   session=False)
        self.session = attached["sessionId"]

    async def eval(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    async def screenshot(self, name: str) -> Path:
        """Save a PNG of the page under test-artifacts/ (kept after the run)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = await self.call("Page.captureScreenshot", {"format": "png"})
        path = ARTIFACTS / name
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 10)
            except TimeoutError:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


