"""Claim: `GET /dashboard` shows an operator the server's sessions live. With two calls running
(an agent call told to say something, a mirror call with a wav microphone) headless Chromium,
on `/dashboard?token=…`, lists both sessions, and its plots gain points and its snapshot
number moves on between two reads seconds apart (the feed pushes, the page draws). Without
the token the page and its feed answer 401; the feed's first snapshot (plain HTTP, SSE) lists
a running call with fps > 0. A screenshot is kept in the pytest tmp dir and in
tests/artifacts/dashboard.png."""
from __future__ import annotations

import asyncio
import json
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

import callutil
from browserutil import Browser, chromium_path
from callutil import CallClient, server_process

TOKEN = "dash-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVER = {"call_size": 256, "sizes": [256], "size": 256, "voice": "en-us", "token": TOKEN}
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture
def authorized_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """CallClient's HTTP requests (offer, say, stats, DELETE) carry the server's token."""
    monkeypatch.setattr(callutil, "aiohttp", type("aiohttp", (), {
        "ClientSession": staticmethod(partial(aiohttp.ClientSession, headers=AUTH))}))


def _speech_wav(path: Path) -> Path:
    from pipelines.speech.tts import SpeechSynthesizer

    synth = SpeechSynthesizer("en-us+m3")
    parts = [np.zeros(11025, np.float32)]
    for text in ["The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs.",
                 "We promptly judged antique ivory buckles for the next prize."] * 2:
        parts += [synth.synthesize(text).audio, np.zeros(int(0.4 * 22050), np.float32)]
    sf.write(path, np.concatenate(parts), 22050)
    return path


async def _first_snapshot(http: str, *, timeout_s: float = 10.0, **request: Any) -> tuple[int, dict[str, Any] | None]:
    """The status of GET /v1/dashboard/feed and the first `snapshot` event it sends."""
    async with aiohttp.ClientSession() as s, s.get(f"{http}/v1/dashboard/feed", **request) as r:
        if r.status != 200:
            return r.status, None
        assert r.headers["Content-Type"].startswith("text/event-stream")
        event, data = "", []
        async with asyncio.timeout(timeout_s):
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line:
                    if event == "snapshot" and data:
                        return r.status, json.loads("\n".join(data))
                    event, data = "", []
    return r.status, None


async def _wait_running(clients: list[CallClient], frames: int = 25, timeout_s: float = 40) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            stats = [await c.stats() for c in clients]
            if all(s.get("video_released", 0) >= frames for s in stats):
                return
            await asyncio.sleep(0.5)


@pytest.mark.timeout(150)
def test_dashboard_and_feed_need_the_token_and_the_feed_reports_a_running_call(authorized_calls: None) -> None:
    async def scenario() -> dict[str, Any]:
        async with server_process(**SERVER) as http:
            out: dict[str, Any] = {}
            async with aiohttp.ClientSession() as s:
                for path in ("/dashboard", "/dashboard?token=wrong", "/v1/dashboard/feed",
                             "/v1/dashboard/feed?token=wrong"):
                    async with s.get(f"{http}{path}") as r:
                        out[path] = (r.status, await r.json())
                async with s.get(f"{http}/dashboard", headers=AUTH) as r:
                    out["page"] = (r.status, await r.text())
            client = CallClient(http, keep_video=False)
            try:
                assert await client.start() == 201
                await _wait_running([client], frames=50)
                out["feed"] = await _first_snapshot(http, headers=AUTH)
                out["feed_query_token"] = (await _first_snapshot(http, params={"token": TOKEN}))[0]
                out["call_id"] = client.location.rsplit("/", 1)[-1]  # type: ignore[union-attr]
            finally:
                await client.close()
            return out

    out = asyncio.run(scenario())
    for path in ("/dashboard", "/dashboard?token=wrong", "/v1/dashboard/feed", "/v1/dashboard/feed?token=wrong"):
        status, body = out[path]
        assert status == 401 and body["error"] == "unauthorized", (path, status, body)
    assert out["page"][0] == 200 and "uPlot" in out["page"][1]
    status, snap = out["feed"]
    assert status == 200 and snap is not None, out["feed"]
    calls = [x for x in snap["sessions"] if x["kind"] == "call"]
    assert [c["id"] for c in calls] == [out["call_id"]], snap
    call = calls[0]
    assert call["fps"] > 0 and call["frames"] > 0 and call["state"] in ("connecting", "connected"), call
    assert call["av_offset_ms"] is not None and {st["stage"] for st in call["stages"]} >= {"render", "mic"}, call
    assert snap["server"]["calls_active"] == 1 and snap["server"]["calls_max"] >= 1, snap["server"]
    assert snap["server"]["rss_mb"] and snap["server"]["rss_mb"] > 0, snap["server"]
    assert out["feed_query_token"] == 200  # ?token= as an EventSource sends it


READ = """(() => ({ rows: document.querySelectorAll('#sessions tbody tr').length,
  ids: window.dashboard.sessions, seq: window.dashboard.seq, points: window.dashboard.points,
  fps: [...document.querySelectorAll('#sessions td[data-fps]')].map((td) => td.textContent),
  state: document.getElementById('feed-state').textContent,
  canvases: document.querySelectorAll('.chart canvas').length }))()"""


@pytest.mark.timeout(240)
def test_dashboard_page_shows_two_calls_live(tmp_path: Path, authorized_calls: None) -> None:
    chromium_path()
    wav = _speech_wav(tmp_path / "mic.wav")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[str]]:
        async with server_process(**SERVER) as http:
            agent = CallClient(http, keep_video=False)
            mirror = CallClient(http, wav=str(wav), mode="mirror", keep_video=False)
            browser = Browser()
            try:
                assert await agent.start() == 201
                assert await mirror.start() == 201
                await _wait_running([agent, mirror])
                status, _ = await agent.post("say", {"text": "Hello operators. This call is on the dashboard, "
                                                              "and you can watch my frames being counted."})
                assert status == 202
                ids = [c.location.rsplit("/", 1)[-1] for c in (agent, mirror)]  # type: ignore[union-attr]
                await browser.start()
                await browser.open("about:blank")
                await browser.call("Emulation.setDeviceMetricsOverride",
                                   {"width": 1400, "height": 1900, "deviceScaleFactor": 1, "mobile": False})
                await browser.call("Page.navigate", {"url": f"{http}/dashboard?token={TOKEN}"})
                first: dict[str, Any] = {}
                async with asyncio.timeout(30):
                    while not (first.get("rows") == 2 and first.get("points", 0) >= 2):
                        await asyncio.sleep(0.3)
                        first = await browser.eval(READ) or {}
                await asyncio.sleep(2.5)
                second = await browser.eval(READ)
                # a session's own plots: click the mirror call's row
                await browser.eval(f"document.querySelector('tr[data-session=\"{ids[1]}\"]').click()")
                await asyncio.sleep(4)
                third = await browser.eval(READ) or {}
                third["detail"] = await browser.eval("document.getElementById('detail-title').textContent")
                third["stage_rows"] = await browser.eval("document.querySelectorAll('#stages tbody tr').length")
                await browser.eval("window.scrollTo(0, 0)")
                await asyncio.sleep(0.3)
                shot = await browser.screenshot("dashboard.png")
                shutil.copy(shot, tmp_path / "dashboard.png")
                ARTIFACTS.mkdir(exist_ok=True)
                shutil.copy(shot, ARTIFACTS / "dashboard.png")
                return first, second, third, ids
            finally:
                await browser.close()
                await asyncio.gather(agent.close(), mirror.close(), return_exceptions=True)

    first, second, third, ids = asyncio.run(scenario())
    assert first["rows"] == 2 and sorted(first["ids"]) == sorted(ids), first
    assert second["rows"] == 2, second
    # live: the snapshot number and the plots' points moved on between two reads 2.5 s apart
    assert second["seq"] >= first["seq"] + 2, (first, second)
    assert second["points"] > first["points"], (first, second)
    assert all(float(f) > 0 for f in second["fps"]), second
    assert second["state"] == "live", second
    assert ids[1] in third["detail"] and third["stage_rows"] >= 5, third
    assert third["canvases"] >= 10, third  # server, overview and the session's own plots drawn
