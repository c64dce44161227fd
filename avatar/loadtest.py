"""`avatar loadtest`: N concurrent WebRTC callers against a server for a bounded time.

Each caller plays speech as its microphone (a WAV, looped; by default a sentence synthesized
here with espeak-ng) and receives the avatar. A live progress line shows the calls up and
their frame rate; at the end a table per call (fps, frame-interval p50/p99 and jitter, frames
lost, first-frame time, audio received) and the server's own histograms over the run (engine
latency: audio in -> frame shown, and say -> first frame), read from its /metrics before and
after. `--json` writes the same as JSON, `--plot` a PNG (frame rate over time per call, the
frame-interval distribution, the server's latency histograms).
"""
from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from web.calls.caller import Caller, count_video_without_decoding

SAY = "Thank you for calling. Let me look that up for you, it will only take a moment."
HISTOGRAMS = ("avatar_engine_latency_seconds", "avatar_say_first_frame_seconds")


class LoadtestError(ValueError):
    """A problem the user can fix (no server at the URL, refused token, ...): one line."""


def speech_wav(path: Path) -> str:
    """A few seconds of speech and pauses, as a caller's microphone."""
    import numpy as np
    import soundfile as sf

    from pipelines.speech.tts import SpeechSynthesizer

    synth = SpeechSynthesizer("en-us")
    speech = synth.synthesize("Hello, I would like to know the opening hours of the shop, please.")
    pause = np.zeros(int(0.8 * speech.sample_rate), np.float32)
    sf.write(path, np.concatenate([pause, speech.audio, pause]), speech.sample_rate)
    return str(path)


async def _metrics(url: str, token: str | None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics", headers=headers) as r:
            if r.status != 200:
                raise LoadtestError(f"{url}/metrics answered {r.status}" + (" (wrong or missing --token?)"
                                                                            if r.status == 401 else ""))
            return await r.text()
    except aiohttp.ClientError as exc:
        raise LoadtestError(f"no server at {url}: {exc}") from None


def buckets(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of a histogram, summed over its label sets."""
    out: dict[float, float] = {}
    for m in re.finditer(rf'^{name}_bucket{{(.*?)}} (\S+)$', text, re.M):
        le = re.search(r'le="([^"]+)"', m.group(1))
        if le:
            key = math.inf if le.group(1) == "+Inf" else float(le.group(1))
            out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def quantile(cumulative: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket."""
    edges = sorted(cumulative)
    if not edges or cumulative[edges[-1]] <= 0:
        return None
    total, prev_edge, prev = cumulative[edges[-1]], 0.0, 0.0
    rank = q * total
    for e in edges:
        c = cumulative[e]
        if c >= rank:
            if math.isinf(e):
                return prev_edge
            return prev_edge + (e - prev_edge) * ((rank - prev) / (c - prev) if c > prev else 0.0)
        prev_edge, prev = e, c
    return prev_edge


def server_figures(before: str, after: str) -> dict[str, dict[str, float | None]]:
    out = {}
    for name in HISTOGRAMS:
        a, b = buckets(before, name), buckets(after, name)
        delta = {k: v - a.get(k, 0.0) for k, v in b.items()}
        n = delta.get(math.inf, 0.0)
        out[name] = {"count": n, "p50": quantile(delta, 0.5), "p99": quantile(delta, 0.99),
                     "buckets": {("+Inf" if math.isinf(k) else k): v for k, v in sorted(delta.items())}}
    return out


async def run(url: str, *, callers: int, duration_s: float, wav: str | None = None, mode: str = "mirror",
              token: str | None = None, say_every_s: float = 0.0, ramp_s: float = 0.5, decode: bool = True,
              progress: Any = sys.stderr, camera: str | None = None) -> dict[str, Any]:
    url = url.rstrip("/")
    if not decode:
        count_video_without_decoding()
    before = await _metrics(url, token)
    peers = [Caller(url, wav=wav, mode=mode, token=token, camera=camera) for _ in range(callers)]
    fps_series: list[list[tuple[float, float]]] = [[] for _ in peers]
    t0 = time.monotonic()
    try:
        for i, p in enumerate(peers):  # a short ramp: callers do not all dial in the same instant
            await p.start()
            if i < len(peers) - 1:
                await asyncio.sleep(ramp_s)
        last_say = -math.inf  # agent mode: the first say at once, then every say_every_s
        while (elapsed := time.monotonic() - t0) < duration_s:
            await asyncio.sleep(0.5)
            up = [p for p in peers if p.location]
            rates = [p.fps_now() for p in up]
            for i, p in enumerate(peers):
                if p.location:
                    fps_series[i].append((round(elapsed, 2), p.fps_now()))
            if say_every_s > 0 and time.monotonic() - last_say >= say_every_s:
                last_say = -math.inf  # agent mode: the first say at once, then every say_every_s
                await asyncio.gather(*(p.say(SAY) for p in up), return_exceptions=True)
            if progress is not None:
                low = f" min {min(rates):.1f}" if rates else ""
                progress.write(f"\rloadtest: {elapsed:5.1f}/{duration_s:.0f} s  {len(up)}/{callers} calls up  "
                               f"fps mean {sum(rates) / max(len(rates), 1):.1f}{low}   ")
                progress.flush()
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        if progress is not None:
            progress.write("\n")
    await asyncio.sleep(0.5)  # the server's last frames counted
    after = await _metrics(url, token)
    return {"url": url, "callers": callers, "duration_s": duration_s, "mode": mode, "decoded_video": decode,
            "calls": [asdict(p.summarize()) for p in peers], "fps_over_time": fps_series,
            "server": server_figures(before, after)}


def table(report: dict[str, Any]) -> str:
    def f(v: Any, fmt: str = "{:.1f}") -> str:
        return "-" if v is None else fmt.format(v)

    rows = ["| call | status | fps | interval p50/p99 ms | jitter ms | lost | first frame s | audio s |",
            "|---|---|---|---|---|---|---|---|"]
    for i, c in enumerate(report["calls"]):
        rows.append(f"| {i + 1} | {c['status']}{' ' + c['error'][:40] if c['error'] else ''} | {f(c['fps'])} | "
                    f"{f(c['interval_p50_ms'])}/{f(c['interval_p99_ms'])} | {f(c['jitter_ms'])} | "
                    f"{c['lost_frames']} | {f(c['first_frame_s'], '{:.2f}')} | {f(c['audio_s'])} |")
    for name, h in report["server"].items():
        label = name.removeprefix("avatar_").removesuffix("_seconds").replace("_", " ")
        rows.append(f"\nserver {label}: n {h['count']:.0f}, p50 {f(h['p50'] and h['p50'] * 1000, '{:.0f}')} ms, "
                    f"p99 {f(h['p99'] and h['p99'] * 1000, '{:.0f}')} ms")
    return "\n".join(rows)


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for i, series in enumerate(report["fps_over_time"]):
        if series:
            ax[0].plot([t for t, _ in series], [v for _, v in series], label=f"call {i + 1}")
    ax[0].set(title="received fps (2 s window)", xlabel="s since start", ylabel="fps", ylim=(0, 30))
    ax[0].legend(fontsize=7)
    ax[1].bar([str(i + 1) for i in range(len(report["calls"]))],
              [c["interval_p99_ms"] or 0 for c in report["calls"]], label="p99")
    ax[1].bar([str(i + 1) for i in range(len(report["calls"]))],
              [c["interval_p50_ms"] or 0 for c in report["calls"]], label="p50")
    ax[1].set(title="frame interval", xlabel="call", ylabel="ms")
    ax[1].legend()
    for name, h in report["server"].items():
        edges = [k for k in h["buckets"] if k != "+Inf"]
        counts, prev = [], 0.0
        for k in edges:
            counts.append(h["buckets"][k] - prev)
            prev = h["buckets"][k]
        if counts:
            ax[2].step([e * 1000 for e in edges], counts, where="post", label=name.removeprefix("avatar_"))
    ax[2].set(title="server latency histograms (run)", xlabel="ms (bucket upper edge)", ylabel="count",
              xscale="log")
    ax[2].legend(fontsize=7)
    fig.suptitle(f"avatar loadtest: {report['callers']} callers, {report['duration_s']:.0f} s, {report['mode']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(args: Any) -> int:
    if args.callers < 1 or args.duration <= 0:
        raise LoadtestError("--callers must be >= 1 and --duration > 0")
    if args.wav and not Path(args.wav).is_file():
        raise LoadtestError(f"--wav {args.wav}: no such file")
    with tempfile.TemporaryDirectory() as tmp:
        wav = args.wav or (None if args.silent else speech_wav(Path(tmp) / "mic.wav"))
        report = asyncio.run(run(args.url, callers=args.callers, duration_s=args.duration, wav=wav, mode=args.mode,
                                 token=args.token, say_every_s=args.say_every, decode=not args.no_decode))
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    if args.plot:
        plot(report, args.plot)
    refused = [c for c in report["calls"] if c["status"] != 201]
    return 1 if refused else 0
