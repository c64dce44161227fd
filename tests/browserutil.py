"""Headless browsers driven over a websocket (`websockets` package), no browser download:
Debian's /usr/bin/chromium over the DevTools protocol, Debian's firefox-esr over WebDriver
BiDi (Firefox's own remote protocol: no geckodriver needed). Without them a test fails,
saying how to install them."""
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


class _BrowserProcess:
    """What both browsers share: a headless process with a throw-away profile that prints its
    remote-protocol websocket URL on stderr, a screenshot saved under test-artifacts/, and a
    clean stop."""

    name = "browser"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.profile = tempfile.mkdtemp(prefix=f"{self.name}-")
        self._ids = itertools.count(1)
        self.ws: Any = None

    async def _launch(self, argv: list[str], url_pattern: str, timeout_s: float,
                      env: dict[str, str] | None = None) -> str:
        """Start the browser; its websocket URL (stderr is drained afterwards, so a chatty
        browser never blocks on a full pipe)."""
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        assert self.proc.stderr is not None
        url = None
        async with asyncio.timeout(timeout_s):
            while url is None:
                line = (await asyncio.to_thread(self.proc.stderr.readline)).decode(errors="replace")
                if not line and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
                m = re.search(url_pattern, line)
                url = m.group(1) if m else None
        stderr = self.proc.stderr
        asyncio.get_running_loop().run_in_executor(None, lambda: [None for _ in iter(stderr.readline, b"")])
        return url

    def _save_png(self, name: str, data_b64: str) -> Path:
        """Save a PNG of the page under test-artifacts/ (kept after the run)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        path.write_bytes(base64.b64decode(data_b64))
        return path

    async def _stop(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 10)
            except TimeoutError:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


class Browser(_BrowserProcess):
    """Just enough of the DevTools protocol: open a page, evaluate JavaScript in it."""

    name = "chromium"

    def __init__(self, extra_flags: list[str] | None = None) -> None:
        super().__init__()
        self.extra_flags = extra_flags or []
        self.session: str | None = None

    async def start(self) -> None:
        url = await self._launch([chromium_path(), *CHROMIUM_FLAGS, *self.extra_flags,
                                  f"--user-data-dir={self.profile}", "about:blank"],
                                 r"DevTools listening on (ws://\S+)", 30)
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
        return self._save_png(name, (await self.call("Page.captureScreenshot", {"format": "png"}))["data"])

    async def close(self) -> None:
        await self._stop()




def firefox_path() -> str:
    path = os.environ.get("FIREFOX") or shutil.which("firefox-esr") or shutil.which("firefox")
    if path is None:
        pytest.fail("headless Firefox is needed for the call-page test: apt-get install -y firefox-esr "
                    "(or set FIREFOX=/path/to/firefox)", pytrace=False)
    return path


# Fake camera and microphone without a prompt; autoplay allowed; host candidates on loopback
# (Firefox leaves 127.0.0.1 out of ICE by default) and not hidden behind mDNS names; nothing
# fetched from the network at start-up.
FIREFOX_PREFS = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "messaging-system.rsexperimentloader.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",
}


class FirefoxBrowser(_BrowserProcess):
    """The same interface as `Browser`, over WebDriver BiDi (session.new,
    browsingContext.navigate, script.evaluate, browsingContext.captureScreenshot)."""

    name = "firefox"

    def __init__(self, prefs: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.prefs = {**FIREFOX_PREFS, **(prefs or {})}
        self.context: str | None = None

    async def start(self) -> None:
        with open(os.path.join(self.profile, "user.js"), "w") as f:
            for k, v in self.prefs.items():
                f.write(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n")
        url = await self._launch([firefox_path(), "--headless", "--no-remote", "--profile", self.profile,
                                  "--remote-debugging-port=0", "about:blank"],
                                 r"WebDriver BiDi listening on (ws://\S+)", 60, {**os.environ, "MOZ_HEADLESS": "1"})
        self.ws = await connect(f"{url}/session", max_size=None, ping_interval=None)
        await self.call("session.new", {"capabilities": {}})
        tree = await self.call("browsingContext.getTree", {})
        self.context = tree["contexts"][0]["context"]

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        ident = next(self._ids)
        await self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == ident:
                if reply.get("type") == "error":
                    raise RuntimeError(f"{method}: {reply.get('error')}: {reply.get('message')}")
                return reply.get("result", {})

    async def open(self, url: str) -> None:
        await self.call("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    async def eval(self, expression: str) -> Any:
        """The expression's value, carried as JSON (BiDi's own value encoding is verbose)."""
        result = await self.call("script.evaluate", {
            "expression": f"JSON.stringify(({expression}) ?? null)", "target": {"context": self.context},
            "awaitPromise": False})
        if result.get("type") == "exception":
            raise RuntimeError(f"script error: {result['exceptionDetails'].get('text')}")
        value = result["result"]
        return json.loads(value["value"]) if value.get("type") == "string" else None

    async def screenshot(self, name: str) -> Path:
        shot = await self.call("browsingContext.captureScreenshot", {"context": self.context})
        return self._save_png(name, shot["data"])

    async def close(self) -> None:
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.call("session.end", {}), 5)
            except Exception:  # the browser may already be gone
                pass
        await self._stop()
