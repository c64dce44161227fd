"""Claim: the example Pipecat agent's page works in headless Chromium: Connect joins the
agent over SmallWebRTC, the browser decodes the avatar's video (a face, not a blank frame:
pixels read back from the <video> element) and hears its greeting (inbound audio energy from
the browser's own getStats()). A screenshot goes to test-artifacts/."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from browserutil import Browser, chromium_path
from pipecatutil import agent_process

# Every 200 ms, cumulative inbound audio energy and duration (standard inbound-rtp fields).
AUDIO_SAMPLER = """(() => { window.__audio = [];
  setInterval(async () => {
    if (!pc) return;
    (await pc.getStats()).forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "audio" && r.totalSamplesDuration !== undefined)
        window.__audio.push({ energy: r.totalAudioEnergy, duration: r.totalSamplesDuration });
    });
  }, 200);
  return true; })()"""
# What the <video> element shows: its size and the spread of its pixels' brightness.
VIDEO_PIXELS = """(() => { const v = document.getElementById('avatar');
  if (!v.videoWidth) return null;
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let s = 0, s2 = 0, n = 0;
  for (let i = 0; i < d.length; i += 4) { const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]; s += y; s2 += y * y; n++; }
  const mean = s / n; return { width: c.width, height: c.height, mean, std: Math.sqrt(s2 / n - mean * mean) }; })()"""


def _loudest(samples: list[dict[str, Any]], span: int = 5) -> float:
    """The loudest mean power (full scale = 1) over any second of the samples."""
    best = 0.0
    for a, b in zip(samples, samples[span:]):
        dt = b["duration"] - a["duration"]
        if dt > 0:
            best = max(best, (b["energy"] - a["energy"]) / dt)
    return best


@pytest.mark.timeout(180)
def test_agent_page_joins_in_chromium_and_shows_the_speaking_avatar() -> None:
    chromium_path()

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], Any, str]:
        async with agent_process("--greeting", "Hello from the Pipecat agent. You can see me and hear me.") as http:
            browser = Browser(["--autoplay-policy=no-user-gesture-required"])
            try:
                await browser.start()
                await browser.open(f"{http}/")
                async with asyncio.timeout(20):
                    while not await browser.eval("!!document.getElementById('connect')"):
                        await asyncio.sleep(0.2)
                await browser.eval("document.getElementById('connect').click()")
                async with asyncio.timeout(30):
                    while await browser.eval("window.agentStats.state") != "connected":
                        await asyncio.sleep(0.2)
                await browser.eval(AUDIO_SAMPLER)
                stats: dict[str, Any] = {}
                with contextlib.suppress(TimeoutError):  # the assertions below say what was missing
                    async with asyncio.timeout(30):
                        while stats.get("framesDecoded", 0) < 75 or _loudest(await browser.eval("window.__audio.slice()") or []) < 1e-3:
                            await asyncio.sleep(0.5)
                            stats = await browser.eval("JSON.parse(JSON.stringify(window.agentStats))") or {}
                pixels = await browser.eval(VIDEO_PIXELS)
                audio = await browser.eval("window.__audio.slice()") or []
                shot = await browser.screenshot("pipecat-agent-chromium.png")
                return stats, audio, pixels, str(shot)
            finally:
                await browser.close()

    stats, audio, pixels, shot = asyncio.run(scenario())
    assert stats.get("framesDecoded", 0) >= 75, (stats, shot)
    assert pixels and (pixels["width"], pixels["height"]) == (256, 256), pixels
    assert pixels["std"] > 20, pixels  # a portrait, not a flat frame
    assert _loudest(audio) >= 1e-3, audio[-5:]  # the greeting was heard
