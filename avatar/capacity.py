"""`avatar bench capacity`: how many live avatars one server carries at 25 fps without late frames.

For each kind of session — `agent` (text-driven: each call says a sentence every few seconds)
and `mirror` (audio-driven: each caller's microphone moves the avatar's lips) — N WebRTC calls
are run against a fresh `avatar serve` on this machine for a while, N = 1, 2, 3, ... until a
step fails: a call received under 24.5 fps, or more than 1 % of frames were lost on the way or
late or dropped in the server. The callers stand in for remote browsers (`--no-decode`, niced):
what is measured is the server — graphs, renderer, encoders, RTP over loopback. Per step: the
frames late or dropped, received fps, frame-interval p99, per-stage processing p99, server CPU
per session (main process + engine processes), and GPU memory where there is CUDA. A progress
bar over the steps; a table, JSON and a plot of lateness against N.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from .loadtest import LoadtestError, buckets, quantile, run, speech_wav

MIN_FPS, MAX_LOST = 24.5, 0.01


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _server(size: int, max_calls: int, **extra_env: str) -> Any:
    port = _free_port()
    env = {**os.environ, "AVATAR_CALL_SIZE": str(size), "AVATAR_MAX_CALLS": str(max_calls), "AVATAR_VOICE": "en-us",
           **extra_env}
    proc = subprocess.Popen([sys.executable, "-m", "avatar", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            t0 = time.monotonic()
            while True:
                if proc.poll() is not None:
                    raise LoadtestError(f"avatar serve exited with {proc.returncode} while starting")
                if time.monotonic() - t0 > 180:
                    raise LoadtestError("avatar serve was not ready within 180 s")
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(f"{url}/readyz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        return await r.text()


def _sum(text: str, name: str, where: str = "") -> float:
    """A metric's samples summed over the label sets that contain `where`."""
    return sum(float(m.group(2)) for m in re.finditer(rf"^{name}(?:{{([^}}\n]*)}})? (\S+)$", text, re.M)
               if where in (m.group(1) or ""))


def _stage_p99_ms(before: str, after: str) -> dict[str, float]:
    out = {}
    # (the exposition sorts labels: graph, le, stage)
    stages = set(re.findall(r'avatar_stage_latency_seconds_bucket\{graph="live_call",le="[^"]+",stage="([^"]+)"',
                            after))
    for stage in sorted(stages):
        sel = f'stage="{stage}"'
        a = _stage_buckets(before, sel)
        b = _stage_buckets(after, sel)
        q = quantile({k: v - a.get(k, 0.0) for k, v in b.items()}, 0.99)
        if q is not None:
            out[stage] = round(q * 1000, 2)
    return out


def _stage_buckets(text: str, sel: str) -> dict[float, float]:
    lines = "\n".join(ln for ln in text.splitlines() if 'graph="live_call"' in ln and sel in ln)
    return buckets(lines, "avatar_stage_latency_seconds")


async def step(url: str, n: int, mode: str, seconds: float, wav: str | None, camera: str | None = None) -> dict[str, Any]:
    before = await _metrics(url)
    t0 = time.monotonic()
    report = await run(url, callers=n, duration_s=seconds, wav=wav if mode == "mirror" else None, mode=mode,
                       say_every_s=6.0 if mode == "agent" else 0.0, decode=False, progress=None, camera=camera)
    dt = time.monotonic() - t0
    after = await _metrics(url)
    produced = _sum(after, "avatar_stage_frames_out_total", 'stage="render"') - \
        _sum(before, "avatar_stage_frames_out_total", 'stage="render"')
    late = (_sum(after, "avatar_deadline_misses_total", "render.out->call.video")
            - _sum(before, "avatar_deadline_misses_total", "render.out->call.video")
            + _sum(after, "avatar_frames_dropped_total", "idle.out->render.in")
            - _sum(before, "avatar_frames_dropped_total", "idle.out->render.in"))
    cpu = (_sum(after, "process_cpu_seconds_total") - _sum(before, "process_cpu_seconds_total")
           + _sum(after, "avatar_engine_process_cpu_seconds_total")
           - _sum(before, "avatar_engine_process_cpu_seconds_total")) / dt
    calls = report["calls"]
    expected = [max(1, c["frames"] + c["lost_frames"]) for c in calls]
    lost = max((c["lost_frames"] / e for c, e in zip(calls, expected)), default=1.0)
    fps = min((c["fps"] for c in calls), default=0.0)
    interval = max((c["interval_p99_ms"] or 0.0 for c in calls), default=0.0)
    late_share = late / produced if produced else 1.0
    ok = bool(calls) and fps >= MIN_FPS and lost <= MAX_LOST and late_share <= MAX_LOST \
        and all(c["status"] == 201 for c in calls)
    return {"mode": mode, "sessions": n, "ok": bool(ok), "min_fps": round(float(fps), 2), "lost_share": round(float(lost), 4), "late_share": round(float(late_share), 4),
            "interval_p99_ms": round(float(interval), 1), "cpu_cores": round(cpu, 2),
            "cpu_per_session": round(cpu / n, 3), "stage_p99_ms": _stage_p99_ms(before, after),
            "gpu_memory_bytes": _sum(after, "avatar_gpu_memory_bytes", 'kind="allocated"') or None,
            "engine_latency_p99_ms": (lambda q: None if q is None else round(q * 1000, 1))(
                report["server"]["avatar_engine_latency_seconds"]["p99"]),
            "say_first_frame_p99_ms": (lambda q: None if q is None else round(q * 1000, 1))(
                report["server"]["avatar_say_first_frame_seconds"]["p99"])}


async def capacity(*, size: int, modes: list[str], max_sessions: int, seconds: float) -> dict[str, Any]:
    from tqdm import tqdm

    steps: list[dict[str, Any]] = []
    best: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        wav = speech_wav(Path(tmp) / "mic.wav") if "mirror" in modes else None
        bar = tqdm(total=len(modes) * max_sessions, desc="capacity", unit="step", file=sys.stderr)
        for mode in modes:
            best[mode] = 0
            async with _server(size, max_sessions) as url:
                for n in range(1, max_sessions + 1):
                    bar.set_postfix_str(f"{mode}, {n} sessions")
                    result = await step(url, n, mode, seconds, wav)
                    steps.append(result)
                    bar.update(1)
                    if not result["ok"]:
                        bar.update(max_sessions - n)  # the next N would only fail harder
                        break
                    best[mode] = n
        bar.close()
    return {"size": size, "fps": 25, "seconds_per_step": seconds, "max_sessions": best, "steps": steps,
            "criterion": f"every call >= {MIN_FPS} fps received, <= {MAX_LOST:.0%} frames lost, late or dropped"}


def table(report: dict[str, Any]) -> str:
    rows = ["| kind | sessions | ok | min fps | lost | late or dropped | interval p99 ms | CPU cores (per session) | engine latency p99 ms | say->first frame p99 ms |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for s in report["steps"]:
        rows.append(f"| {s['mode']} | {s['sessions']} | {'yes' if s['ok'] else 'no'} | {s['min_fps']} | "
                    f"{s['lost_share']:.1%} | {s['late_share']:.1%} | {s['interval_p99_ms']} | "
                    f"{s['cpu_cores']} ({s['cpu_per_session']}) | {s['engine_latency_p99_ms'] or '-'} | "
                    f"{s['say_first_frame_p99_ms'] or '-'} |")
    for mode, n in report["max_sessions"].items():
        last = [s for s in report["steps"] if s["mode"] == mode and s["sessions"] == max(n, 1)]
        stages = ", ".join(f"{k} {v}" for k, v in (last[0]["stage_p99_ms"].items() if last else []))
        rows.append(f"\n{mode}: this server carries {n} sessions at {report['size']}², 25 fps "
                    f"({report['criterion']}); per-stage p99 ms at {max(n, 1)}: {stages}")
    return "\n".join(rows)


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for mode in report["max_sessions"]:
        steps = [s for s in report["steps"] if s["mode"] == mode]
        n = [s["sessions"] for s in steps]
        ax[0].plot(n, [100 * max(s["late_share"], s["lost_share"]) for s in steps], "o-", label=mode)
        ax[1].plot(n, [s["interval_p99_ms"] for s in steps], "o-", label=mode)
        ax[2].plot(n, [s["cpu_cores"] for s in steps], "o-", label=mode)
    ax[0].axhline(100 * MAX_LOST, color="gray", ls="--")
    ax[0].set(title="frames late, dropped or lost (worst of the two)", xlabel="sessions", ylabel="%")
    ax[1].axhline(40, color="gray", ls=":")
    ax[1].set(title="received frame interval p99", xlabel="sessions", ylabel="ms")
    ax[2].set(title="server CPU (main + engine processes)", xlabel="sessions", ylabel="cores")
    for a in ax:
        a.legend()
    fig.suptitle(f"avatar bench capacity: {report['size']}², 25 fps, {report['seconds_per_step']:.0f} s per step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(args: Any) -> int:
    if args.max < 1 or args.seconds <= 0 or args.size % 2:
        raise LoadtestError("--max must be >= 1, --seconds > 0 and --size even")
    report = asyncio.run(capacity(size=args.size, modes=args.kinds, max_sessions=args.max, seconds=args.seconds))
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.plot:
        plot(report, args.plot)
    return 0
