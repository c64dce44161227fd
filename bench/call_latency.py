"""WebRTC call figures: engine latency in mirror mode over a long call, and how many calls the
server sustains at full rate. The server runs in its own process (`avatar serve`), the callers
are aiortc clients in this one.

    python -m bench.call_latency [--seconds 60] [--size 512] [--calls 1 2 3 4 5 6] [--call-seconds 20]

Engine latency: for each 20 ms chunk of the caller's audio, from its arrival at the server to
the release (to the encoder) of the first video frame showing its mouth motion.
Sustained calls: N agent-mode calls, each told to speak a long paragraph, for --call-seconds;
the server keeps up when it neither dropped nor repeated (late for their presentation time)
more than 1 % of its video frames. The callers stand in for remote browsers: they run in a
second process at nice 19 and count the video frames they receive without decoding them
(decoding N 512² streams would take the CPU the server is measured on). Server CPU (cores)
comes from its own process_cpu_seconds_total plus its engine processes'
avatar_engine_process_cpu_seconds_total (the renderer's children).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from callutil import CallClient, server_process  # noqa: E402

PARAGRAPH = ("Thanks for calling. I can talk for as long as you like, and my lips follow every word I say. "
             "Ask me anything about the weather, the news, or the best way to cook a quick dinner tonight.")


def speech_wav(path: Path, seconds: float) -> Path:
    from pipelines.speech.tts import SpeechSynthesizer

    s = SpeechSynthesizer("en-us+m3")
    parts, n = [], 0
    while n < seconds * 22050:
        a = s.synthesize("The quick brown fox jumps over the lazy dog, and we keep on talking.").audio
        parts += [a, np.zeros(int(0.3 * 22050), np.float32)]
        n += len(a) + int(0.3 * 22050)
    sf.write(path, np.concatenate(parts), 22050)
    return path


async def metric(http: str, name: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(f"{http}/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def engine_latency(seconds: float, size: int) -> dict[str, float]:
    wav = speech_wav(Path("/tmp/bench-call-mic.wav"), seconds + 5)
    async with server_process(call_size=size, sizes=[size], size=size, voice="en-us") as http:
        c = CallClient(http, wav=str(wav), mode="mirror", keep_video=False)
        assert await c.start() == 201
        for i in range(int(seconds)):
            await asyncio.sleep(1)
            if i % 10 == 9:
                print(f"  mirror call: {i + 1}/{int(seconds)} s", flush=True)
        async with aiohttp.ClientSession() as s, s.get(f"{http}{c.location}?window=100000") as r:
            stats = await r.json()
        v = [t for t, _ in c.got.video]
        await c.close()
    return {"size": size, "seconds": seconds, "latency_p50_ms": stats["latency_p50_ms"],
            "latency_p99_ms": stats["latency_p99_ms"], "av_offset_ms": stats["av_offset_ms"],
            "received_fps": (len(v) - 1) / (v[-1] - v[0]),
            "mic_jitter_p50_ms": stats["mic_jitter_p50_ms"], "mic_jitter_p99_ms": stats["mic_jitter_p99_ms"],
            "stale_share": stats["stale_frames"] / max(1, stats["mirrored_frames"])}


def _count_video_without_decoding() -> None:
    from web.calls.caller import count_video_without_decoding

    count_video_without_decoding()


async def callers(http: str, n: int, seconds: float) -> None:
    """The callers' side (run in a niced process: on this 2-core machine they would otherwise
    take the CPU the server is being measured for). Prints one JSON line of received fps."""
    _count_video_without_decoding()
    clients = [CallClient(http, keep_video=False) for _ in range(n)]
    for c in clients:
        assert await c.start() == 201
    await asyncio.sleep(2)
    for c in clients:
        for _ in range(3):
            await c.post("say", {"text": PARAGRAPH})
    print("STARTED", flush=True)
    t0 = time.monotonic()
    counts0 = [len(c.got.video) for c in clients]
    await asyncio.sleep(seconds)
    counts1 = [len(c.got.video) for c in clients]
    dt = time.monotonic() - t0
    for c in clients:
        await c.close()
    print(json.dumps([(b - a) / dt for a, b in zip(counts0, counts1, strict=True)]), flush=True)


async def sustained(n: int, seconds: float, size: int) -> dict[str, float]:
    async with server_process(call_size=size, sizes=[size], size=size, voice="en-us", max_calls=max(n, 1)) as http:
        proc = await asyncio.create_subprocess_exec(
            "nice", "-n", "19", sys.executable, "-m", "bench.call_latency", "--callers", http, str(n),
            str(seconds), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert proc.stdout is not None
        while (await proc.stdout.readline()).strip() != b"STARTED":
            if proc.stdout.at_eof():
                raise RuntimeError("the callers' process failed")
        late0 = await metric(http, 'avatar_deadline_misses_total{channel="render.out->call.video"')
        drop0 = await metric(http, 'avatar_frames_dropped_total{channel="idle.out->render.in"')
        cpu0 = await metric(http, "process_cpu_seconds_total")
        engines0 = await metric(http, "avatar_engine_process_cpu_seconds_total")
        t0 = time.monotonic()
        fps = json.loads((await proc.stdout.readline()).decode())
        dt = time.monotonic() - t0
        main_cpu = (await metric(http, "process_cpu_seconds_total") - cpu0) / dt
        engines_cpu = (await metric(http, "avatar_engine_process_cpu_seconds_total") - engines0) / dt
        cpu = main_cpu + engines_cpu
        late = await metric(http, 'avatar_deadline_misses_total{channel="render.out->call.video"') - late0
        dropped = await metric(http, 'avatar_frames_dropped_total{channel="idle.out->render.in"') - drop0
        await proc.wait()
    frames = n * seconds * 25
    return {"calls": n, "size": size, "late_or_dropped_share": (late + dropped) / frames,
            "min_received_fps": min(fps), "mean_received_fps": float(np.mean(fps)),
            "server_cpu_cores": cpu, "server_cpu_cores_per_call": cpu / max(n, 1),
            "server_main_process_cpu_cores": main_cpu, "engine_processes_cpu_cores": engines_cpu}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--calls", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    ap.add_argument("--call-seconds", type=float, default=20)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--callers", nargs=3, metavar=("URL", "N", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callers:
        await callers(args.callers[0], int(args.callers[1]), float(args.callers[2]))
        return
    out: dict[str, object] = {}
    if not args.skip_latency:
        print(f"[1/2] engine latency, one mirror call of {args.seconds:.0f} s at {args.size}²", flush=True)
        out["latency"] = lat = await engine_latency(args.seconds, args.size)
        print(f"  p50 {lat['latency_p50_ms']} ms, p99 {lat['latency_p99_ms']} ms, A/V offset "
              f"{lat['av_offset_ms']} ms, received {lat['received_fps']:.1f} fps, lips held (audio not yet heard) "
              f"on {100 * lat['stale_share']:.1f} % of mirrored frames; caller audio jitter p50 "
              f"{lat['mic_jitter_p50_ms']} ms, p99 {lat['mic_jitter_p99_ms']} ms", flush=True)
    print(f"[2/2] sustained calls at {args.size}², {args.call_seconds:.0f} s each", flush=True)
    rows = []
    for n in args.calls:
        r = await sustained(n, args.call_seconds, args.size)
        rows.append(r)
        print(f"  {n} calls: {100 * r['late_or_dropped_share']:.2f} % frames late/dropped, received fps "
              f"min {r['min_received_fps']:.1f} mean {r['mean_received_fps']:.1f}; server CPU {r['server_cpu_cores']:.2f} cores "
              f"({r['server_cpu_cores_per_call']:.2f} per call; main process {r['server_main_process_cpu_cores']:.2f}, "
              f"engine processes {r['engine_processes_cpu_cores']:.2f})", flush=True)
    out["sustained"] = rows
    os.makedirs("bench/out", exist_ok=True)
    Path("bench/out/call_latency.json").write_text(json.dumps(out, indent=2))
    print("wrote bench/out/call_latency.json")


if __name__ == "__main__":
    asyncio.run(main())
