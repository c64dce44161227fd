"""Claim: the call page works in real browsers: headless Chromium and Firefox, with fake
camera and microphone, load `/`, start a call, make the avatar say a sentence, and the
browser's own getStats() shows video decoded and the avatar's voice heard (inbound audio
energy rises from a silent stretch when it speaks). A screenshot of the page is kept in
test-artifacts/."""
from __future__ import annotations

import asyncio
import json
import contextlib
from typing import Any

import pytest

from browserutil import Browser, FirefoxBrowser, chromium_path, firefox_path
from callutil import server_process

FAKE_MEDIA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]

# Every 200 ms, the inbound audio's totalAudioEnergy / totalSamplesDuration / audioLevel from
# the page's RTCPeerConnection (`pc`, a top-level binding of call.js) into window.__audio.
AUDIO_SAMPLER = """(() => { window.__audio = [];
  setInterval(async () => {
    if (!pc) return;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "audio" && r.totalSamplesDuration !== undefined)
        window.__audio.push({ energy: r.totalAudioEnergy, duration: r.totalSamplesDuration,
                              level: r.audioLevel ?? null, bytes: r.bytesReceived });
    });
  }, 200);
  return true; })()"""
QUIET = 1e-5  # mean power (audioLevel squared, full scale = 1) of the silence between sentences
LOUD = 1e-3  # ... of speech: about -30 dBFS over a second


def _power(a: dict[str, float], b: dict[str, float]) -> float:
    """Mean audio power between two samples of the cumulative stats."""
    dt = b["duration"] - a["duration"]
    return (b["energy"] - a["energy"]) / dt if dt > 0 else 0.0


def _loudest(samples: list[dict[str, Any]], span: int = 5) -> float:
    """The loudest mean power over any second (5 samples) of the stretch."""
    return max((_power(samples[i], samples[i + span]) for i in range(len(samples) - span)), default=0.0)


TURN = {"urls": ["turn:127.0.0.1:9?transport=udp"], "username": "caller", "credential": "secret"}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("browser_name", ["chromium", "firefox"])
def test_call_page_starts_a_call_and_the_avatar_speaks(browser_name: str) -> None:
    chromium_path() if browser_name == "chromium" else firefox_path()

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], str, str]:
        # Chromium's page also gets a TURN server from the server (setting ice_servers, served
        # at /v1/ice-servers); nothing listens there, so the call connects directly anyway.
        turn = {"ice_servers": [TURN]} if browser_name == "chromium" else {}
        async with server_process(call_size=256, sizes=[256], size=256, voice="en-us", **turn) as http:
            browser: Browser | FirefoxBrowser = Browser(FAKE_MEDIA) if browser_name == "chromium" else FirefoxBrowser()
            try:
                await browser.start()
                await browser.open(f"{http}/")
                async with asyncio.timeout(20):
                    while not await browser.eval("!!document.getElementById('start')"):
                        await asyncio.sleep(0.2)
                await browser.eval("document.getElementById('start').click()")
                async with asyncio.timeout(30):
                    while await browser.eval("window.callStats.state") != "connected":
                        await asyncio.sleep(0.2)
                ice = await browser.eval("JSON.stringify(pc.getConfiguration().iceServers)")
                # the inbound audio's level, sampled in the page from the browser's own
                # getStats() (standard inbound-rtp fields): cumulative energy and duration
                await browser.eval(AUDIO_SAMPLER)
                await asyncio.sleep(2.5)  # connected, nothing said yet: the avatar is silent
                silent = await browser.eval("window.__audio.slice()") or []
                await browser.eval("""(() => { const i = document.getElementById('say-text');
                    i.value = 'Hello from the browser test. I can talk and you can watch me.';
                    document.getElementById('say-button').click(); })()""")
                stats: dict[str, Any] = {}
                speaking: list[dict[str, Any]] = []
                with contextlib.suppress(TimeoutError):  # the assertions below say what was missing
                    async with asyncio.timeout(40):
                        while not (stats.get("framesDecoded", 0) >= 50 and _loudest(speaking) >= LOUD):
                            await asyncio.sleep(0.5)
                            stats = await browser.eval("JSON.parse(JSON.stringify(window.callStats))") or {}
                            speaking = (await browser.eval("window.__audio.slice()") or [])[len(silent):]
                await asyncio.sleep(1.5)  # stats table refreshes every second
                stats = await browser.eval("JSON.parse(JSON.stringify(window.callStats))")
                speaking = (await browser.eval("window.__audio.slice()") or [])[len(silent):]
                shot = await browser.screenshot(f"call-page-{browser_name}.png")
                log = await browser.eval("document.getElementById('log').textContent")
                await browser.eval("document.getElementById('end').click()")
                await asyncio.sleep(0.5)
                return stats, silent, speaking, f"{shot}\n{log}", ice
            finally:
                await browser.close()

    stats, silent, speaking, info, ice = asyncio.run(scenario())
    if browser_name == "chromium":  # the page configured its peer connection with the server's relay
        assert json.loads(ice) == [TURN], ice
    assert stats["framesDecoded"] >= 50, info
    # the silent stretch was heard (samples arrived and were measured) and was quiet ...
    assert len(silent) >= 2 and silent[-1]["duration"] - silent[0]["duration"] >= 1.0, silent
    quiet = _power(silent[0], silent[-1])
    assert quiet < QUIET, (silent, info)
    # ... and the avatar's voice is loud in the browser once it is told to speak
    loudest = _loudest(speaking)
    assert loudest >= LOUD and loudest >= 100 * quiet, (loudest, quiet, speaking, info)
    assert max(s["level"] or 0 for s in speaking) >= 0.02, speaking  # the instantaneous level too
    assert "utterance_started" in info  # the data channel carried the server's events
