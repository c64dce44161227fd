"""Websocket stream latency and capacity, against a real `avatar serve` in a subprocess.

    python -m bench.ws_latency [--voices en-us joe] [--trials 40] [--streams 10] [--seconds 30]

1. say -> first frame: on an open stream, `say` a one-sentence text, then time until the
   client receives the utterance's first video packet and first audio packet (the packets
   whose media covers the `started` time). Sequential trials, random phase against the frame
   clock; p50 / p99 / max.
2. append: an LLM-like client sends one word every 50 ms; time from the fragment that
   completes the first sentence to its first audio and video packets.
3. N concurrent streams, each saying sentences back to back for `--seconds`: media produced
   per wall-clock second per stream (>= 1.0 keeps real time), frames the server dropped or
   delivered late, and say -> first frame under that load.
Raw figures in bench/out/ws_latency.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from web.stream.client import MediaPacket, StreamClient
from web.stream.protocol import Config, Done, Error, Started, Stats

SENTENCE = "The quick brown fox jumps over the lazy dog."
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "A talking head has to keep up with the voice.",
             "Every frame arrives on time, or it is not worth sending.", "Hello there, how are you today?"]
LLM_TEXT = ("Sure, here is the answer you asked for. It comes one word at a time, the way a language "
            "model writes it.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.env = {**os.environ, **{f"AVATAR_{k.upper()}": v for k, v in env.items()}}
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "avatar", "serve", "--port", str(self.port)],
                                     env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        t0 = time.monotonic()
        for line in self.proc.stdout:
            if "serving on" in line:
                print(f"  server up in {time.monotonic() - t0:.1f} s (port {self.port})", flush=True)
                return self
        raise RuntimeError(f"server exited with {self.proc.wait()}")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def pct(values: list[float]) -> dict[str, float]:
    a = np.array(values) * 1000
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}


@dataclass
class Utterance:
    sent: float
    started: float | None = None
    first: dict[str, float] = field(default_factory=dict)
    done: bool = False


async def say_and_time(client: StreamClient, text: str, ident: str, t_sent_ref: list[float] | None = None) -> Utterance:
    """Says `text` and reads until its `done`; first packets of each stream covering its start."""
    u = Utterance(time.monotonic())
    await client.say(text, id=ident)
    async for item in client:
        if isinstance(item, Started) and item.id == ident:
            u.started = item.media_time
        elif isinstance(item, MediaPacket) and u.started is not None and item.stream not in u.first \
                and item.end > u.started:
            u.first[item.stream] = item.received - u.sent
        elif isinstance(item, Error) and (item.fatal or item.id == ident):
            raise RuntimeError(item)
        elif isinstance(item, Done) and item.id == ident:
            u.done = True
            return u
    raise RuntimeError(f"stream closed ({client.close_code})")


async def bench_say(url: str, trials: int, size: int) -> dict[str, Any]:
    async with await StreamClient.connect(url, config=Config(size=size)) as client:
        await say_and_time(client, "Warm up.", "warm")
        video, audio = [], []
        for i in range(trials):
            await asyncio.sleep(random.uniform(0.05, 0.3))  # random phase against the frame clock
            u = await say_and_time(client, SENTENCE, f"t{i}")
            video.append(u.first["video"])
            audio.append(u.first["audio"])
            print(f"\r  say {i + 1}/{trials}: video {u.first['video'] * 1000:.0f} ms, "
                  f"audio {u.first['audio'] * 1000:.0f} ms   ", end="", flush=True)
        print()
    return {"first_video": pct(video), "first_audio": pct(audio)}


async def bench_append(url: str, trials: int, size: int) -> dict[str, Any]:
    video, audio = [], []
    words = LLM_TEXT.split()
    async with await StreamClient.connect(url, config=Config(size=size)) as client:
        await say_and_time(client, "Warm up.", "warm")
        for i in range(trials):
            ident = f"a{i}"
            first: dict[str, float] = {}
            started: list[float] = []
            boundary: list[float] = []

            async def read(ident: str = ident, first: dict[str, float] = first, started: list[float] = started) -> None:
                async for item in client:
                    if isinstance(item, Started) and item.id == ident and not started:
                        started.append(item.media_time)
                    elif isinstance(item, MediaPacket) and started and item.stream not in first \
                            and item.end > started[0]:
                        first[item.stream] = item.received
                    elif isinstance(item, Done) and item.id == ident:
                        return

            reader = asyncio.create_task(read())
            for j, w in enumerate(words):
                await client.append(("" if j == 0 else " ") + w, id=ident)
                if w.endswith(".") and not boundary:
                    boundary.append(time.monotonic())
                await asyncio.sleep(0.05)
            await client.flush()
            await asyncio.wait_for(reader, 60)
            video.append(first["video"] - boundary[0])
            audio.append(first["audio"] - boundary[0])
            print(f"\r  append {i + 1}/{trials}: speech {audio[-1] * 1000:.0f} ms after the boundary   ",
                  end="", flush=True)
            await asyncio.sleep(random.uniform(0.05, 0.3))
        print()
    return {"first_video_after_boundary": pct(video), "first_audio_after_boundary": pct(audio)}


async def one_stream(url: str, seconds: float, size: int, k: int) -> dict[str, Any]:
    async with await StreamClient.connect(url, config=Config(size=size)) as client:
        video: list[MediaPacket] = []
        stats: list[Stats] = []
        latencies: list[float] = []
        end = time.monotonic() + seconds
        i = 0
        t_said, ident, started = time.monotonic(), f"s{k}-0", None
        await asyncio.sleep(random.uniform(0, 1.0))
        await client.say(SENTENCES[k % len(SENTENCES)], id=ident)
        t_said = time.monotonic()
        async for item in client:
            if isinstance(item, MediaPacket):
                if item.stream == "video":
                    video.append(item)
                    if started is not None and item.end > started:
                        latencies.append(item.received - t_said)
                        started = None
            elif isinstance(item, Stats):
                stats.append(item)
            elif isinstance(item, Started) and item.id == ident:
                started = item.media_time
            elif isinstance(item, Done) and item.id == ident:
                if time.monotonic() > end:
                    break
                i += 1
                ident = f"s{k}-{i}"
                await asyncio.sleep(random.uniform(0.2, 0.6))  # a pause between turns, as in a dialogue
                await client.say(SENTENCES[(k + i) % len(SENTENCES)], id=ident)
                t_said = time.monotonic()
            elif isinstance(item, Error):
                raise RuntimeError(item)
        # media time produced per wall second, over the stream's steady part (after 2 s)
        steady = [p for p in video if p.received - video[0].received > 2.0]
        # media seconds per wall second: the slope of media time against arrival time (a fit over
        # every frame, so the jitter of the first and last arrivals does not decide it)
        rate = float(np.polyfit([p.received for p in steady], [p.end for p in steady], 1)[0])
        lag = np.array([p.received - p.end for p in steady])
        fps = len(steady) / (steady[-1].end - steady[0].time)  # frames delivered per media second
        # A slope below 1 is either a lasting drift or a delay that grew once and then stays
        # (queues filling to the latency budget under load): the delay in successive thirds of
        # the run tells them apart, and so does the slope over the last half alone.
        thirds = [float(np.median(part)) * 1000 for part in np.array_split(lag, 3)]
        thirds = [x - thirds[0] for x in thirds]  # growth since the first third (clocks differ)
        half = steady[len(steady) // 2:]
        rate_half = float(np.polyfit([p.received for p in half], [p.end for p in half], 1)[0])
        # The same slope on the server's side: media time sent against its own clock (stats
        # events), which leaves out socket buffers and this client's own event loop.
        st = [x for x in stats if x.wall_time > 2.0]
        server_rate = float(np.polyfit([x.wall_time for x in st], [x.media_time for x in st], 1)[0]) \
            if len(st) >= 3 else float("nan")
        last = stats[-1]
        return {"realtime_factor": round(rate, 4), "realtime_factor_last_half": round(rate_half, 4),
                "server_realtime_factor": round(server_rate, 4),
                "delay_by_third_ms": [round(x, 1) for x in thirds],
                "delivered_fps": round(fps, 1), "video_frames": len(video),
                "arrival_jitter_ms": round(float(np.percentile(lag, 99) - np.percentile(lag, 1)) * 1000, 1),
                "utterances": i + 1,
                "dropped_by_send_queue": last.video_dropped, "late_in_pipeline": last.frames_late,
                "say_to_first_video": latencies}


async def bench_concurrent(url: str, n: int, seconds: float, size: int) -> dict[str, Any]:
    t0 = time.monotonic()
    results = await asyncio.gather(*(one_stream(url, seconds, size, k) for k in range(n)))
    lat = [x for r in results for x in r.pop("say_to_first_video")]
    rates = [r["realtime_factor"] for r in results]
    fps = [r["delivered_fps"] for r in results]
    print(f"  {n} streams for {time.monotonic() - t0:.0f} s: real-time factor min {min(rates):.4f} "
          f"mean {np.mean(rates):.3f}; delivered fps min {min(fps)} mean {np.mean(fps):.1f}", flush=True)
    half = [r["realtime_factor_last_half"] for r in results]
    server = [r["server_realtime_factor"] for r in results]
    print(f"  sent by the server per second of its clock: min {min(server):.4f} mean {np.mean(server):.4f}", flush=True)
    thirds = np.array([r["delay_by_third_ms"] for r in results])
    print(f"  slope over the last half: min {min(half):.4f} mean {np.mean(half):.4f}; median growth of the delay "
          f"by third of the run: {', '.join(f'{x:.0f}' for x in np.median(thirds, 0))} ms", flush=True)
    return {"streams": results, "realtime_factor_min": min(rates),
            "realtime_factor_mean": round(float(np.mean(rates)), 3),
            "server_realtime_factor_min": min(server), "server_realtime_factor_mean": round(float(np.mean(server)), 4),
            "realtime_factor_last_half_min": min(half), "realtime_factor_last_half_mean": round(float(np.mean(half)), 4),
            "delay_by_third_ms_median": [round(float(x), 1) for x in np.median(thirds, 0)],
            "delivered_fps_min": min(fps), "delivered_fps_mean": round(float(np.mean(fps)), 1),
            "late_frames_total": sum(r["late_in_pipeline"] for r in results),
            "say_to_first_video_under_load": pct(lat) if lat else None}


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((re.sub(r".*:\s*", "", line).strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "python": sys.version.split()[0]}


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "size": args.size, "voices": {}}
    for voice in args.voices:
        print(f"[voice {voice}] starting a server", flush=True)
        with ServerProcess(voice=voice, size=str(args.size)) as server:
            r: dict[str, Any] = {}
            if args.trials:
                print("  say -> first frame (one sentence)", flush=True)
                r["say"] = await bench_say(server.url, args.trials, args.size)
                print("  append, one word every 50 ms", flush=True)
                r["append"] = await bench_append(server.url, max(3, args.trials // 4), args.size)
            if args.streams:
                print(f"  {args.streams} concurrent streams for {args.seconds:.0f} s", flush=True)
                r["concurrent"] = await bench_concurrent(server.url, args.streams, args.seconds, args.size)
            out["voices"][voice] = r
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voices", nargs="+", default=["en-us", "joe"])
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--streams", type=int, default=10)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--out", default="bench/out/ws_latency.json")
    args = p.parse_args(argv)
    result = asyncio.run(amain(args))
    os.makedirs("bench/out", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    summary = {v: {"say_video": r.get("say", {}).get("first_video"), "say_audio": r.get("say", {}).get("first_audio"),
                   "append_audio": r.get("append", {}).get("first_audio_after_boundary"),
                   "concurrent_rt_min": r.get("concurrent", {}).get("realtime_factor_min"),
                   "concurrent_fps_mean": r.get("concurrent", {}).get("delivered_fps_mean")}
               for v, r in result["voices"].items()}
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
