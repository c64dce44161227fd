"""The renderer on each backend here: ms per frame (one torch thread, batch 1 and 4, real
motion) and start-up seconds with an empty and with a filled engine cache.

    python -m bench.engine_backends [--size 512] [--backends eager compile onnxruntime]

Each start runs in a fresh interpreter (nothing compiled survives in memory), with an empty
inductor cache of its own, so the second start's gain is the engine cache's
(engines/cache.py) alone. Figures: bench/results/engine-backends-<date>.json and .png.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"


def one(backend: str, size: int, cache_dir: str, repeats: int) -> dict[str, object]:
    """In this process: load the renderer on `backend`, time it (what --one prints)."""
    import torch

    from bench.render_speed import realistic_params
    from engines.cache import ArtifactCache
    from engines.module_engine import ModuleEngine
    from pipelines.motion.params import N_PARAMS
    from pipelines.render.avatar import default_avatar
    from pipelines.render.renderer import WarpRenderer

    torch.set_num_threads(1)
    avatar = default_avatar(size)
    t0 = time.perf_counter()
    engine = ModuleEngine(f"renderer-{size}", lambda dev: WarpRenderer(avatar, output="yuv420p"),
                          example={"params": torch.zeros(N_PARAMS)}, backend=backend,
                          cache=ArtifactCache(cache_dir), buckets=(1, 2, 4))
    engine.load()
    engine.warmup()
    start_s = time.perf_counter() - t0
    params = realistic_params(200)
    items = [{"params": p} for p in params]
    row: dict[str, object] = {"backend": backend, "size": size, "start_s": round(start_s, 2),
                              "describe": engine.describe()}
    for batch in (1, 4):
        best = float("inf")
        for _ in range(repeats):
            t1 = time.perf_counter()
            for i in range(0, 160, batch):
                engine.run_batch(items[i:i + batch])
            best = min(best, (time.perf_counter() - t1) / 160 * 1000)
        row[f"ms_batch{batch}"] = round(best, 3)
    return row


def start(backend: str, size: int, cache_dir: str, repeats: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as inductor:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": inductor, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        res = subprocess.run([sys.executable, "-m", "bench.engine_backends", "--one", backend, "--size", str(size),
                              "--cache", cache_dir, "--repeat", str(repeats)],
                             env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"backend": backend, "size": size, "error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def plot(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "ms_batch1" in r and r.get("run") == "first"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    names = [str(r["backend"]) for r in ok]
    x = range(len(ok))
    a.bar([i - 0.2 for i in x], [r["ms_batch1"] for r in ok], 0.4, label="batch 1")
    a.bar([i + 0.2 for i in x], [r["ms_batch4"] for r in ok], 0.4, label="batch 4")
    a.set_xticks(list(x), names)
    a.set_ylabel("ms per frame (one thread)")
    a.set_title(f"renderer {ok[0]['size'] if ok else ''}², per backend")
    a.legend()
    for run, off in (("first", -0.2), ("second", 0.2)):
        vals = {str(r["backend"]): r["start_s"] for r in rows if r.get("run") == run and "start_s" in r}
        b.bar([i + off for i in x], [vals.get(n, 0) for n in names], 0.4, label=f"{run} start")
    b.set_xticks(list(x), names)
    b.set_ylabel("seconds to load, compile and warm")
    b.set_title("start-up: empty cache, then filled")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--backends", nargs="+", default=["eager", "compile", "onnxruntime"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.size, args.cache, args.repeat)))
        return
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as cache:
        steps = [(b, run) for b in args.backends for run in ("first", "second")]
        for i, (backend, run) in enumerate(steps, 1):
            print(f"[{i}/{len(steps)}] {backend}, {run} start ...", flush=True)
            row = {**start(backend, args.size, cache, args.repeat), "run": run}
            rows.append(row)
            print("   ", {k: v for k, v in row.items() if k != "describe"}, flush=True)
    OUT.mkdir(exist_ok=True)
    stem = OUT / f"engine-backends-{datetime.date.today()}"
    stem.with_suffix(".json").write_text(json.dumps({"size": args.size, "rows": rows}, indent=1))
    plot(rows, stem.with_suffix(".png"))
    print(f"wrote {stem}.json and .png")


if __name__ == "__main__":
    main()
