"""Streaming cost and latency of the audio-to-motion path, one torch thread.

    python -m bench.motion_latency [--chunk-ms 20 40] [--seconds 30] [--backends onnx torch]

Compute per chunk: log-mel + the transformer step with its caches, on real speech; with
the live path's onnxruntime step and with eager torch.
Latency added for an instant of speech = look-ahead + framing (a token is computable
17.5 ms after its centre) + waiting for the chunk to fill + compute.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pipelines.motion.audio_model import StreamingAudioToMotion, load_audio_model, token_centre, token_end
from pipelines.motion.streaming_onnx import OnnxStep


def speech(seconds: float) -> np.ndarray:
    from scipy.signal import resample_poly

    from pipelines.speech.tts import SpeechSynthesizer

    s = SpeechSynthesizer("en-us")
    out = []
    while sum(len(x) for x in out) < seconds * 16000:
        u = s.synthesize("The quick brown fox jumps over the lazy dog, and the band plays on.")
        out.append(resample_poly(u.audio, 160, 441).astype(np.float32))
    return np.concatenate(out)[: int(seconds * 16000)]


def main() -> list[dict[str, float]]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunk-ms", type=int, nargs="+", default=[20, 40])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--lookahead", type=int, nargs="+", default=[0, 40, 80, 120])
    ap.add_argument("--backends", nargs="+", default=["onnx", "torch"], choices=["onnx", "torch"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_audio_model()
    x = speech(args.seconds)
    framing = float(token_end(0) - token_centre(0))
    rows = []
    steps = {"onnx": OnnxStep.build(model), "torch": None}
    for backend, chunk_ms in [(b, c) for b in args.backends for c in args.chunk_ms]:
        n = 16 * chunk_ms
        s = StreamingAudioToMotion(model, 80, steps[backend])
        times = []
        for i in range(0, len(x) - n, n):
            t0 = time.perf_counter()
            s.push(x[i:i + n])
            times.append(time.perf_counter() - t0)
        warm = np.array(times[25:]) * 1000
        p50, p99 = float(np.percentile(warm, 50)), float(np.percentile(warm, 99))
        per40 = p50 * 40 / chunk_ms
        print(f"  {backend}, chunks of {chunk_ms} ms: compute p50 {p50:.2f} ms, p99 {p99:.2f} ms "
              f"({per40:.2f} ms per 40 ms of audio)", flush=True)
        for la in args.lookahead:
            latency = la + 1000 * framing + chunk_ms + p99
            rows.append({"backend": backend, "chunk_ms": chunk_ms, "lookahead_ms": la, "compute_p50_ms": p50, "compute_p99_ms": p99,
                         "compute_per_40ms_audio_ms": per40, "latency_ms": latency})
            print(f"    look-ahead {la:3d} ms: latency {latency:.1f} ms (look-ahead + {1000 * framing:.1f} framing "
                  f"+ {chunk_ms} chunk + {p99:.2f} p99 compute)", flush=True)
    return rows


if __name__ == "__main__":
    main()
