"""Speech under load: how long a new `say` waits for its first media while other streams talk.

    python -m bench.speech_load [--voice joe] [--streams 1 3 5 7] [--trials 20] [--calls 0]

One `avatar serve` (256² streams). For each N: N background websocket streams each say a
sentence, and the next one as soon as `done` arrives (talking back to back); one more stream,
the probe, says a one-sentence text `--trials` times (a random pause of 0.5-1.5 s after each
`done`) and times `say` -> the first media packet of that utterance (audio or video, whichever
covers its `started` time first). Also per background stream: media seconds per wall second
(the slope; >= 0.99 keeps real time) and video frames dropped or late (the server's `stats`).
`--calls K` also runs K WebRTC calls at 512² that speak all the time (bench/call_latency.py's
callers). Output: a table, `bench/out/speech_load.json`, and a plot `bench/out/speech_load.png`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from callutil import CallClient, started_server  # noqa: E402

from web.stream.client import MediaPacket, StreamClient  # noqa: E402
from web.stream.protocol import Config, Done, Error, Started, Stats  # noqa: E402

SENTENCES = ["The quick brown fox jumps over the lazy dog, and then it runs back into the woods.",
             "A talking head has to keep up with the voice, or nobody believes it is listening.",
             "Every frame arrives on time, or it is not worth sending to the person on the call.",
             "Hello there, how are you today? I hope the weather is kind to you this afternoon."]
PROBE = "Yes, I can answer that right away."


async def background(url: str, k: int, stop: asyncio.Event, out: dict[str, Any]) -> None:
    async with await StreamClient.connect(url, config=Config(size=256)) as c:
        video: list[MediaPacket] = []
        stats: list[Stats] = []
        i = 0
        await c.say(SENTENCES[k % len(SENTENCES)], id=f"b{k}-0")
        async for item in c:
            if isinstance(item, MediaPacket) and item.stream == "video":
                video.append(item)
            elif isinstance(item, Stats):
                stats.append(item)
            elif isinstance(item, Done):
                if stop.is_set():
                    break
                i += 1
                await c.say(SENTENCES[(k + i) % len(SENTENCES)], id=f"b{k}-{i}")
            elif isinstance(item, Error) and item.fatal:
                raise RuntimeError(item)
        steady = [p for p in video if p.received - video[0].received > 3.0]
        out["slope"] = float(np.polyfit([p.received for p in steady], [p.end for p in steady], 1)[0])
        last = stats[-1]
        out["frames"] = last.video_frames
        out["dropped"] = last.video_dropped + last.frames_late
        out["utterances"] = i + 1


async def probe(url: str, trials: int, bar: Any) -> list[float]:
    waits: list[float] = []
    async with await StreamClient.connect(url, config=Config(size=256)) as c:
        await asyncio.sleep(3.0)  # the background streams are talking by now
        for t in range(trials):
            ident, started, sent = f"p{t}", None, time.monotonic()
            await c.say(PROBE, id=ident)
            got = None
            async for item in c:
                if isinstance(item, Started) and item.id == ident:
                    started = item.media_time
                elif isinstance(item, MediaPacket) and started is not None and got is None and item.end > started:
                    got = item.received - sent
                elif isinstance(item, Done) and item.id == ident:
                    break
                elif isinstance(item, Error) and (item.fatal or item.id == ident):
                    raise RuntimeError(item)
            waits.append(got if got is not None else float("nan"))
            bar.update(1)
            await asyncio.sleep(random.uniform(0.5, 1.5))
    return waits


async def callers(http: str, n: int, stop: asyncio.Event) -> None:
    clients = [CallClient(http, keep_video=False) for _ in range(n)]
    for c in clients:
        assert await c.start() == 201
    while not stop.is_set():
        for c in clients:
            await c.post("say", {"text": SENTENCES[random.randrange(len(SENTENCES))]})
        try:
            await asyncio.wait_for(stop.wait(), 4.0)
        except TimeoutError:
            pass
    for c in clients:
        await c.close()


async def one(voice: str, n: int, trials: int, calls: int) -> dict[str, Any]:
    settings = {"voice": voice, "sizes": [256, 512], "size": 256, "call_size": 512, "max_connections": 32,
                "max_calls": max(4, calls)}
    async with started_server(**settings) as server:
        url = server.http.replace("http", "ws") + "/v1/stream"
        stop = asyncio.Event()
        outs: list[dict[str, Any]] = [{} for _ in range(n)]
        tasks = [asyncio.ensure_future(background(url, k, stop, outs[k])) for k in range(n)]
        if calls:
            tasks.append(asyncio.ensure_future(callers(server.http, calls, stop)))
        async def underruns() -> float:
            import aiohttp

            async with aiohttp.ClientSession() as s, s.get(f"{server.http}/metrics") as r:
                text = await r.text()
            return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                       if ln.startswith("avatar_speech_underrun_frames_total"))

        with tqdm(total=trials, desc=f"{voice}, {n} streams" + (f", {calls} calls" if calls else ""),
                  file=sys.stderr) as bar:
            waits = await probe(url, trials, bar)
        gaps = await underruns()
        stop.set()
        await asyncio.gather(*tasks)
    w = np.array(waits) * 1000
    frames = sum(o["frames"] for o in outs)
    return {"voice": voice, "streams": n, "calls": calls, "say_to_first_media_ms": {
                "p50": round(float(np.nanmedian(w)), 1), "max": round(float(np.nanmax(w)), 1),
                "all": [round(float(x), 1) for x in w]},
            "slope_min": round(min(o["slope"] for o in outs), 4) if outs else None,
            "dropped_pct": round(100 * sum(o["dropped"] for o in outs) / max(1, frames), 3),
            "underrun_pct": round(100 * gaps / max(1, frames), 3)}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for voice in sorted({r["voice"] for r in results}):
        rs = [r for r in results if r["voice"] == voice]
        n = [r["streams"] for r in rs]
        ax.plot(n, [r["say_to_first_media_ms"]["p50"] for r in rs], "o-", label=f"{voice} p50")
        ax.plot(n, [r["say_to_first_media_ms"]["max"] for r in rs], "x--", label=f"{voice} max")
    ax.set_xlabel("streams talking meanwhile")
    ax.set_ylabel("say -> first media (ms)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("python -m bench.speech_load")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voice", nargs="+", default=["joe"])
    p.add_argument("--streams", type=int, nargs="+", default=[1, 3, 5, 7])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--calls", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/out/speech_load"))
    a = p.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for voice in a.voice:
        for n in a.streams:
            r = asyncio.run(one(voice, n, a.trials, a.calls))
            results.append(r)
            m = r["say_to_first_media_ms"]
            print(f"{voice:6s} {n} streams{f' + {a.calls} calls' if a.calls else ''}: say -> first media "
                  f"p50 {m['p50']:.0f} ms, max {m['max']:.0f} ms; slowest stream slope {r['slope_min']}, "
                  f"dropped/late {r['dropped_pct']} %, speech gaps {r['underrun_pct']} % of frames", flush=True)
    a.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    plot(results, a.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
