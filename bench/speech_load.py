"""Speech under load: how long a new `say` waits for its first media while other streams talk.

    python -m bench.speech_load [--voice joe] [--streams 1 3 5 7] [--trials 20] [--calls 0]

One `avatar serve` (256² streams). For each N: N background websocket streams each say a
sentence, and the next one as soon as `done` arrives (talking back to back); one more stream,
the probe, says a one-sentence text `--trials` times (a random pause of 0.5-1.5 s after each
`done`) and times `say` -> the first media packet of that utterance (audio or video, whichever
covers its `started` time first). Also per background stream: media seconds per wall second
(the slope; >= 0.99 keeps real time) and video frames dropped or late (the server's `stats`).
`--calls K` also runs K WebRTC calls at 512² that speak all the time (a say every 4 s, so
each has speech queued). `--probe call` makes the probe one more WebRTC call (512², agent
mode) instead of a stream, and times `POST /say` -> the first audible audio frame its caller
receives (aiortc's receiver: RTP, Opus decode and jitter buffer included), so `--streams 0
--calls 3 --probe call` is four calls all speaking. Output: a table,
`bench/out/speech_load.json`, and a plot `bench/out/speech_load.png`.
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
            elif isinstance(item, Done) or (isinstance(item, Error) and item.code.value == "busy"):
                if stop.is_set():
                    break
                if isinstance(item, Error):  # the server is full: ask again a second later
                    out["refused"] = out.get("refused", 0) + 1
                    await asyncio.sleep(1.0)
                else:
                    out["spoken"] = out.get("spoken", 0) + 1
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


async def probe(url: str, trials: int, bar: Any, refused: list[int]) -> list[float]:
    """`trials` accepted says timed; a `busy` refusal is counted (in `refused`) and asked again."""
    waits: list[float] = []
    async with await StreamClient.connect(url, config=Config(size=256)) as c:
        await asyncio.sleep(3.0)  # the background streams are talking by now
        attempt = 0
        while len(waits) < trials:
            attempt += 1
            ident, started, sent = f"p{attempt}", None, time.monotonic()
            await c.say(PROBE, id=ident)
            got = None
            busy = False
            async for item in c:
                if isinstance(item, Started) and item.id == ident:
                    started = item.media_time
                elif isinstance(item, MediaPacket) and started is not None and got is None and item.end > started:
                    got = item.received - sent
                elif isinstance(item, Done) and item.id == ident:
                    break
                elif isinstance(item, Error) and item.id == ident and item.code.value == "busy":
                    busy = True
                    break
                elif isinstance(item, Error) and (item.fatal or item.id == ident):
                    raise RuntimeError(item)
            if busy:
                refused[0] += 1
            else:
                waits.append(got if got is not None else float("nan"))
                bar.update(1)
            await asyncio.sleep(random.uniform(0.5, 1.5))
    return waits


async def call_probe(http: str, trials: int, bar: Any, refused: list[int]) -> list[float]:
    """`POST say` -> the first audible audio frame the caller receives, per accepted trial
    (a 503 `busy` is counted in `refused` and asked again)."""
    c = CallClient(http, keep_video=False)
    assert await c.start() == 201
    waits: list[float] = []
    try:
        await asyncio.sleep(3.0)  # connected, and the other callers are talking by now
        attempt = 0
        while len(waits) < trials:
            attempt += 1
            ident, seen = f"p{attempt}", len(c.got.audio)
            sent = time.monotonic()
            status, _ = await c.post("say", {"text": PROBE, "id": ident})
            if status == 503:
                refused[0] += 1
                await asyncio.sleep(1.0)
                continue
            if status != 202:
                raise RuntimeError(f"say refused: {status}")
            got = None
            async with asyncio.timeout(30):
                while True:
                    await asyncio.sleep(0.005)
                    if got is None:
                        for arrival, mono, _rate in c.got.audio[seen:]:
                            if arrival >= sent and float(np.abs(mono).max(initial=0.0)) > 0.01:
                                got = arrival - sent
                                break
                        seen = len(c.got.audio)
                    if any(e.get("kind") == "utterance_done" and e.get("utterance_id") == ident
                           for e in c.got.events):
                        break
            waits.append(got if got is not None else float("nan"))
            bar.update(1)
            await asyncio.sleep(random.uniform(0.5, 1.5))
    finally:
        await c.close()
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


async def one(voice: str, n: int, trials: int, calls: int, probe_kind: str = "stream") -> dict[str, Any]:
    settings = {"voice": voice, "sizes": [256, 512], "size": 256, "call_size": 512, "max_connections": 32,
                "max_calls": max(4, calls + (probe_kind == "call"))}
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

        if calls:
            await asyncio.sleep(2.0)  # the callers are connected before the probe counts
        with tqdm(total=trials, desc=f"{voice}, {n} streams" + (f", {calls} calls" if calls else "")
                  + f", {probe_kind} probe", file=sys.stderr) as bar:
            refused = [0]
            waits = await (call_probe(server.http, trials, bar, refused) if probe_kind == "call"
                           else probe(url, trials, bar, refused))
        gaps = await underruns()
        stop.set()
        await asyncio.gather(*tasks)
    w = np.array(waits) * 1000
    frames = sum(o["frames"] for o in outs)
    return {"voice": voice, "streams": n, "calls": calls, "probe": probe_kind, "say_to_first_media_ms": {
                "p50": round(float(np.nanmedian(w)), 1), "max": round(float(np.nanmax(w)), 1),
                "all": [round(float(x), 1) for x in w]},
            "slope_min": round(min(o["slope"] for o in outs), 4) if outs else None,
            "dropped_pct": round(100 * sum(o["dropped"] for o in outs) / max(1, frames), 3),
            "probe_refused": refused[0],
            "background_refused_pct": round(100 * sum(o.get("refused", 0) for o in outs) / max(
                1, sum(o.get("refused", 0) + o.get("spoken", 0) for o in outs)), 1),
            # the gap counter covers every session's speech (calls too); shared over stream frames
            "underrun_pct": round(100 * gaps / frames, 3) if frames else None}


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
    p.add_argument("--probe", choices=["stream", "call"], default="stream")
    p.add_argument("--out", type=Path, default=Path("bench/out/speech_load"))
    a = p.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for voice in a.voice:
        for n in a.streams:
            r = asyncio.run(one(voice, n, a.trials, a.calls, a.probe))
            results.append(r)
            m = r["say_to_first_media_ms"]
            print(f"{voice:6s} {n} streams{f' + {a.calls} calls' if a.calls else ''}, {a.probe} probe: "
                  f"say -> first {'audio' if a.probe == 'call' else 'media'} "
                  f"p50 {m['p50']:.0f} ms, max {m['max']:.0f} ms; slowest stream slope {r['slope_min']}, "
                  f"dropped/late {r['dropped_pct']} %, speech gaps {r['underrun_pct']} % of frames; refused: "
                  f"probe {r['probe_refused']}, background {r['background_refused_pct']} % of says", flush=True)
    a.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    plot(results, a.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
