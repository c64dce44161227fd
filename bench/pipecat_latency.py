"""What the Pipecat avatar service adds: seconds from a TTS audio frame entering
AvatarVideoService to the frame that shows that instant leaving it, for one and for two
pipelines in one process (sharing one batching renderer), with the TTS audio arriving as
"sentence": each sentence in one frame, as Pipecat's Piper service sends it; "burst": each
sentence at once in 20 ms frames; "streaming": 20 ms frames in real time (a TTS that streams;
also with the lip model's 0 ms look-ahead).
Writes bench/out/pipecat_latency.json and a histogram PNG.

    .venv/bin/python -m bench.pipecat_latency [--size 256] [--fps 25] [--sentences 4]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the pipeline harness

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs.",
             "We promptly judged antique ivory buckles for the next prize.",
             "How vexingly quick daft zebras jump.", "Sphinx of black quartz, judge my vow.",
             "The five boxing wizards jump quickly."]


async def _one_setting(n: int, mode: str, speech: list[tuple[np.ndarray, int]], size: int, fps: int,
                       lookahead_ms: int = 40) -> dict:
    from pipecat.frames.frames import TTSStoppedFrame

    from integrations.pipecat import AvatarVideoService
    from integrations.speech_face import close_shared_engines
    from pipecatharness import start, tts_frames

    services = [AvatarVideoService(size=size, fps=fps, lookahead_ms=lookahead_ms) for _ in range(n)]
    runs = [await start(s) for s in services]
    renderer = services[0].engines.renderer  # type: ignore[union-attr]
    calls0, items0 = renderer.stats.calls, renderer.stats.items
    cpu0 = time.process_time()
    t0 = time.monotonic()

    async def talk(run, seed: int) -> None:
        await asyncio.sleep(0.13 * seed)  # the pipelines do not start speaking in step
        for i, (pcm, rate) in enumerate(speech):
            if mode == "sentence":  # as Pipecat's Piper service sends it: one frame a sentence
                await run.worker.queue_frames([*tts_frames(pcm, rate, chunk_s=len(pcm) / rate), TTSStoppedFrame()])
                await asyncio.sleep(len(pcm) / rate + 0.6)
            elif mode == "burst":
                await run.worker.queue_frames([*tts_frames(pcm, rate), TTSStoppedFrame()])
                await asyncio.sleep(len(pcm) / rate + 0.6)
            else:
                frames = tts_frames(pcm, rate)
                start_t = time.monotonic()
                for j, f in enumerate(frames):
                    await asyncio.sleep(max(0.0, start_t + j * 0.02 - time.monotonic()))
                    await run.worker.queue_frame(f)
                await run.worker.queue_frame(TTSStoppedFrame())
                await asyncio.sleep(0.6)
            print(f"    pipeline {seed + 1}/{n}: sentence {i + 1}/{len(speech)} said", flush=True)

    await asyncio.gather(*(talk(r, i) for i, r in enumerate(runs)))
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    faces = [s.face for s in services]
    lat = np.array([x for f in faces for x in f.stats.added_latency_s])  # type: ignore[union-attr]
    out = {
        "pipelines": n, "tts": mode, "lookahead_ms": lookahead_ms, "chunks_timed": int(len(lat)),
        "added_latency_ms": {"p50": round(float(np.percentile(lat, 50)) * 1000, 1),
                             "p99": round(float(np.percentile(lat, 99)) * 1000, 1),
                             "max": round(float(lat.max()) * 1000, 1)},
        "frames": sum(f.stats.frames for f in faces), "speaking_frames": sum(f.stats.speaking_frames for f in faces),
        "stale_frames": sum(f.stats.stale_frames for f in faces), "late_frames": sum(f.stats.late_frames for f in faces),
        "renderer_mean_batch": round((renderer.stats.items - items0) / max(1, renderer.stats.calls - calls0), 2),
        "cpu_cores": round(cpu / wall, 2), "latencies_s": lat.round(4).tolist(),
    }
    for r in runs:
        await r.worker.cancel()
        await r.finish()
    await close_shared_engines()
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--sentences", type=int, default=6)
    args = p.parse_args(argv)
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    try:
        from loguru import logger  # Pipecat logs every frame's progress at DEBUG

        logger.remove()
        logger.add(sys.stderr, level="WARNING")
    except ImportError:
        pass
    from pipelines.speech.tts import SpeechSynthesizer

    print("synthesizing the sentences (piper, joe)", flush=True)
    synth = SpeechSynthesizer("joe", seed=0)
    speech = []
    for text in SENTENCES[: args.sentences]:
        u = synth.synthesize(text)
        speech.append(((np.clip(u.audio, -1, 1) * 32767).astype(np.int16), u.sample_rate))
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
               "size": args.size, "fps": args.fps, "settings": []}
    settings = [(1, "sentence", 40), (1, "burst", 40), (1, "streaming", 40), (1, "streaming", 0),
                (2, "sentence", 40), (2, "burst", 40), (2, "streaming", 40)]
    for i, (n, mode, la) in enumerate(settings, 1):
        print(f"[{i}/{len(settings)}] {n} pipeline(s), {mode} TTS, look-ahead {la} ms", flush=True)
        r = asyncio.run(_one_setting(n, mode, speech, args.size, args.fps, la))
        lat = r["added_latency_ms"]
        print(f"    added latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms over "
              f"{r['chunks_timed']} chunks; stale {r['stale_frames']}/{r['speaking_frames']} speaking frames, "
              f"late {r['late_frames']}/{r['frames']}; renderer batch {r['renderer_mean_batch']}; "
              f"{r['cpu_cores']} cores", flush=True)
        results["settings"].append(r)
    os.makedirs("bench/out", exist_ok=True)
    with open("bench/out/pipecat_latency.json", "w") as f:
        json.dump(results, f, indent=1)
    _plot(results, "bench/out/pipecat_latency.png")
    print("wrote bench/out/pipecat_latency.json and bench/out/pipecat_latency.png")
    return results


def _plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results["settings"]), figsize=(4 * len(results["settings"]), 3), sharey=False)
    for ax, r in zip(axes, results["settings"], strict=True):
        ax.hist(np.array(r["latencies_s"]) * 1000, bins=30, color="tab:blue")
        ax.axvline(r["added_latency_ms"]["p99"], color="r", ls="--", label=f"p99 {r['added_latency_ms']['p99']} ms")
        ax.axvline(100, color="k", ls=":", label="100 ms")
        ax.set_title(f"{r['pipelines']} pipeline(s), {r['tts']}, {r['lookahead_ms']} ms", fontsize=9)
        ax.set_xlabel("added latency (ms)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("TTS chunks")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
