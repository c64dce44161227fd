"""One short GPU check of the project's CUDA path, for a lent machine: correctness and speed
of the renderer on CUDA against CPU, the engine layer (ModuleEngine, EngineWorker,
Batcher) around it, and the audio-to-motion model on CUDA against CPU.

    python -m bench.gpu_check --out $OUT/gpu_check.json [--device cuda|cpu] [--quick] [--budget-s 200]

Needs only torch, numpy, pillow, scikit-image, safetensors and prometheus-client (through
`realtime`); no TTS, no codecs, no pydantic. Packages the GPU machine lacks are blocked at
import (`--no-block` turns that off), so a run on a full dev venv proves the import set too.
Each part is wrapped: a failure is recorded as an error string and the next part runs. The
JSON is rewritten after every part, so a run cut short still leaves what it measured.
With `--device cpu` the "device" side runs on the CPU too (comparisons are cpu vs cpu).
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import importlib
import importlib.abc
import json
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

T_START = time.perf_counter()

# Packages the GPU machine does not have: importing any of them would fail there.
ABSENT = ("pydantic", "pydantic_core", "av", "espeakng_loader", "piper", "aiortc", "websockets",
          "silero_vad", "mediapipe", "fastapi", "uvicorn", "starlette")
PROJECT = ("pipelines", "engines", "realtime", "avatar", "web", "bench")


class _Blocker(importlib.abc.MetaPathFinder):
    """Makes the packages in ABSENT unimportable, as they are on the GPU machine."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in ABSENT:
            self.attempts.append(name)
            raise ModuleNotFoundError(f"{name} blocked by bench.gpu_check (absent on the GPU machine)")
        return None


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:6.1f}s] {msg}", flush=True)


def _jsonable(x: Any) -> Any:
    try:
        import numpy as np
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    if isinstance(x, tuple | set):
        return list(x)
    return str(x)


class Results:
    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {"script": "bench.gpu_check", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     "parts": {}, "part_seconds": {}}
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - T_START, 2)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, default=_jsonable)
        os.replace(tmp, self.path)


class Deadline:
    def __init__(self, budget_s: float) -> None:
        self.end = T_START + budget_s

    def left(self) -> float:
        return self.end - time.perf_counter()


# --------------------------------------------------------------------------------------------
# helpers

def sync_fn(device: str) -> Callable[[], None]:
    import torch
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def time_calls(fn: Callable[[], Any], sync: Callable[[], None], *, target_s: float, min_iters: int = 3,
               max_iters: int = 2000, repeats: int = 3, warmup: int = 2) -> dict[str, float]:
    """Seconds per call: warm up, calibrate on one call, then `repeats` runs of n calls each
    (n chosen so a run takes about target_s / repeats); best and median of the runs."""
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    one = max(time.perf_counter() - t0, 1e-6)
    n = int(min(max(target_s / repeats / one, min_iters), max_iters))
    runs = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        runs.append((time.perf_counter() - t0) / n)
    return {"best_s": min(runs), "median_s": statistics.median(runs), "iters": n, "repeats": repeats}


def synthetic_phonemes(seconds: float, seed: int) -> list[Any]:
    """A speech-like ARPAbet timeline: syllables (consonant + vowel), with pauses."""
    import numpy as np

    from pipelines.motion.visemes import TARGETS
    from pipelines.speech.types import Phoneme

    rng = np.random.default_rng(seed)
    vowels = [s for s, t in TARGETS.items() if t[3] == 1.0]
    consonants = [s for s, t in TARGETS.items() if t[3] < 1.0 and s != "SIL"]
    out, t = [], 0.0
    while t < seconds * 1000:
        if rng.random() < 0.08:
            d = rng.uniform(150, 400)
            out.append(Phoneme("SIL", t, t + d))
            t += d
            continue
        for sym, lo, hi in ((str(rng.choice(consonants)), 40, 110), (str(rng.choice(vowels)), 70, 200)):
            d = rng.uniform(lo, hi)
            out.append(Phoneme(sym, t, t + d))
            t += d
    return out


def realistic_params(n: int, fps: int = 25, seed: int = 0) -> Any:
    """(n, N_PARAMS) float32: viseme mouth from a synthetic phoneme timeline plus idle life
    (what bench.render_speed does, without TTS)."""
    import numpy as np
    import torch

    from pipelines.motion.idle import IdleMotion
    from pipelines.motion.params import IDLE, MOUTH, N_PARAMS, clip_params
    from pipelines.motion.visemes import mouth_params

    p = np.zeros((n, N_PARAMS), np.float32)
    p[:, MOUTH] = mouth_params(synthetic_phonemes(n / fps + 1, seed), n, fps)
    t = np.arange(n) / fps
    p[:, IDLE] = IdleMotion(seed).params(t, speaking=p[:, 0])
    return torch.from_numpy(clip_params(p))


def extreme_params() -> Any:
    """A few frames at the ends of the parameter ranges (big warps, wide mouth, head turned)."""
    import numpy as np
    import torch

    from pipelines.motion.params import IDX, N_PARAMS
    rows = []
    for jaw, press, rnd, spread, tuck, blink, brow, yaw, pitch, roll in (
            (1.0, 0, 0, 0, 0, 0, 1, 12, -8, 6), (0.6, 0, 1, 0, 0, 1, -1, -12, 8, -6),
            (0.3, 1, 0, 1, 0, 0.5, 0, 5, 5, 5), (0.8, 0, 0, 1, 1, 0, 0.5, -5, -10, 0)):
        r = np.zeros(N_PARAMS, np.float32)
        for k, v in dict(jaw_open=jaw, lip_press=press, lip_round=rnd, lip_spread=spread, lip_tuck=tuck,
                         blink_r=blink, blink_l=blink, brow_raise=brow, head_yaw=yaw, head_pitch=pitch,
                         head_roll=roll, breath=0.7).items():
            r[IDX[k]] = v
        rows.append(r)
    return torch.from_numpy(np.stack(rows))


_AVATARS: dict[int, Any] = {}


def avatar(size: int) -> Any:
    """default_avatar(size); if skimage's loader fails, the same photograph through PIL."""
    if size in _AVATARS:
        return _AVATARS[size]
    from pipelines.render.avatar import default_avatar
    try:
        a = default_avatar(size)
    except Exception as exc:  # noqa: BLE001
        log(f"default_avatar({size}) failed ({exc!r}); loading astronaut.png through PIL")
        import importlib.util
        import json as _json
        from importlib import resources

        import numpy as np
        from PIL import Image

        from pipelines.render.avatar import DEFAULT_AVATAR, frame_portrait
        spec = importlib.util.find_spec("skimage")
        assert spec is not None and spec.submodule_search_locations
        png = os.path.join(list(spec.submodule_search_locations)[0], "data", "astronaut.png")
        img = np.asarray(Image.open(png).convert("RGB"))
        meta = _json.loads(resources.files("pipelines.render").joinpath("assets/astronaut.json").read_text())
        a = frame_portrait(DEFAULT_AVATAR, img, np.asarray(meta["landmarks"], np.float32), size)
    _AVATARS[size] = a
    return a


_RENDERERS: dict[tuple[int, str], Any] = {}


def cpu_renderer(size: int, output: str) -> Any:
    from pipelines.render.renderer import WarpRenderer
    key = (size, output)
    if key not in _RENDERERS:
        _RENDERERS[key] = WarpRenderer(avatar(size), output=output).eval()
    return _RENDERERS[key]


def on_device(r: Any, device: str) -> Any:
    return copy.deepcopy(r).to(device).eval()


def frame_diff(a: Any, b: Any) -> dict[str, Any]:
    import torch
    a16, b16 = a.to(torch.int16), b.to(torch.int16)
    d = (a16 - b16).abs()
    per_frame = d.flatten(1).amax(1)
    return {"shape_a": list(a.shape), "shape_b": list(b.shape), "dtype_a": str(a.dtype), "dtype_b": str(b.dtype),
            "max_abs": int(d.max()), "mean_abs": float(d.float().mean()),
            "frac_pixels_diff": float((d > 0).float().mean()), "frac_pixels_diff_gt1": float((d > 1).float().mean()),
            "n_values_diff_gt2": int((d > 2).sum()), "per_frame_max": [int(x) for x in per_frame]}


class tf32_conv_off:
    """Context: cuDNN convolutions in full fp32 (no TF32), restoring the previous setting."""

    def __enter__(self) -> dict[str, Any]:
        import torch
        self.mode = None
        try:
            self.prev = torch.backends.cudnn.conv.fp32_precision
            torch.backends.cudnn.conv.fp32_precision = "ieee"
            self.mode = "new"
            return {"api": "torch.backends.cudnn.conv.fp32_precision", "was": self.prev, "now": "ieee"}
        except AttributeError:
            self.prev = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = False
            self.mode = "legacy"
            return {"api": "torch.backends.cudnn.allow_tf32", "was": self.prev, "now": False}

    def __exit__(self, *exc: object) -> None:
        import torch
        if self.mode == "new":
            torch.backends.cudnn.conv.fp32_precision = self.prev
        elif self.mode == "legacy":
            torch.backends.cudnn.allow_tf32 = self.prev


def sync_points(fn: Callable[[], Any]) -> list[str]:
    """Where fn makes the CPU wait on the GPU (torch.cuda.set_sync_debug_mode), as file:line."""
    import torch
    seen: dict[str, int] = {}
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" not in str(w.message):
            continue
        key = f"{os.path.relpath(w.filename)}:{w.lineno}"
        seen[key] = seen.get(key, 0) + 1
    return [f"{k} x{v}" for k, v in seen.items()]


# --------------------------------------------------------------------------------------------
# parts

def part_env(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    env: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "cpu_count": os.cpu_count(), "torch": torch.__version__, "numpy": np.__version__,
                           "torch_cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                           "torch_threads_default": torch.get_num_threads(), "requested_device": args.device}
    try:
        env["cudnn"] = torch.backends.cudnn.version()
    except Exception as exc:  # noqa: BLE001
        env["cudnn"] = repr(exc)
    try:
        env["tf32"] = {"cudnn.conv.fp32_precision": torch.backends.cudnn.conv.fp32_precision,
                       "cuda.matmul.fp32_precision": torch.backends.cuda.matmul.fp32_precision}
    except AttributeError:
        env["tf32"] = {"cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                       "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    env["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
                      "sm_count": p.multi_processor_count, "device_count": torch.cuda.device_count()}
        t0 = time.perf_counter()
        torch.zeros(1, device="cuda").add_(1).item()
        env["cuda_init_s"] = round(time.perf_counter() - t0, 3)
        try:
            env["driver"] = torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else None
        except Exception:  # noqa: BLE001
            pass
    for mod in ("scipy", "skimage", "PIL", "safetensors", "prometheus_client", "onnx", "onnxruntime"):
        try:
            m = importlib.import_module(mod)
            env.setdefault("packages", {})[mod] = getattr(m, "__version__", "?")
        except Exception as exc:  # noqa: BLE001
            env.setdefault("packages", {})[mod] = f"not importable: {type(exc).__name__}"
    return env


LEAVES = ("pipelines.speech.types", "pipelines.motion.params", "pipelines.motion.visemes", "pipelines.motion.idle",
          "pipelines.render.avatar", "pipelines.render.renderer", "pipelines.audio.features",
          "pipelines.motion.audio_model", "engines.weights", "engines.eager", "engines.base", "engines.batcher")


def part_imports(blocker: _Blocker | None) -> dict[str, Any]:
    before = set(sys.modules)
    out: dict[str, Any] = {"modules": {}}
    for m in LEAVES:
        t0 = time.perf_counter()
        try:
            importlib.import_module(m)
            out["modules"][m] = f"ok {time.perf_counter() - t0:.2f}s"
        except Exception as exc:  # noqa: BLE001
            out["modules"][m] = f"FAILED {type(exc).__name__}: {exc}"
    new = set(sys.modules) - before
    out["project_modules_loaded"] = sorted(m for m in new if m.split(".")[0] in PROJECT)
    out["third_party_loaded"] = sorted({m.split(".")[0] for m in sys.modules
                                        if m.split(".")[0] not in sys.stdlib_module_names
                                        and not m.startswith("_") and m.split(".")[0] not in PROJECT})
    out["absent_packages_imported"] = sorted({m.split(".")[0] for m in sys.modules} & set(ABSENT))
    out["blocked_import_attempts"] = sorted(set(blocker.attempts)) if blocker else "blocking off"
    return out


def part_correctness(device: str, quick: bool) -> dict[str, Any]:
    import torch
    n = 4 if quick else 20
    params = torch.cat([realistic_params(n, seed=1), extreme_params()])
    out: dict[str, Any] = {"frames": len(params), "realistic_frames": n, "extreme_frames": len(params) - n,
                           "device": device}
    for size in (256, 512):
        for fmt in ("rgb24", "yuv420p"):
            key = f"{size}_{fmt}"
            try:
                rc = cpu_renderer(size, fmt)
                rd = on_device(rc, device)
                with torch.inference_mode():
                    a = rc(params)
                    b = rd(params.to(device)).cpu()
                    res = frame_diff(a, b)
                    res["realistic_only"] = frame_diff(a[:n], b[:n])
                    # The same batch frame by frame on the device: is the output batch-invariant?
                    one = torch.cat([rd(params[i:i + 1].to(device)).cpu() for i in range(len(params))])
                    res["device_batched_vs_single_max_abs"] = int((one.to(torch.int16) - b.to(torch.int16)).abs().max())
                    if fmt == "yuv420p" and device.startswith("cuda"):
                        with tf32_conv_off() as how:
                            c = rd(params.to(device)).cpu()
                        res["tf32_conv_off"] = {"setting": how, **{k: v for k, v in frame_diff(a, c).items()
                                                                   if k in ("max_abs", "mean_abs", "frac_pixels_diff")}}
                out[key] = res
                log(f"  correctness {key}: max {res['max_abs']} mean {res['mean_abs']:.4f} "
                    f"frac {res['frac_pixels_diff']:.2e}" + (f" | tf32 off: max {res['tf32_conv_off']['max_abs']}"
                                                             if "tf32_conv_off" in res else ""))
            except Exception as exc:  # noqa: BLE001
                out[key] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}
                log(f"  correctness {key}: ERROR {exc!r}")
    return out


def part_render_speed(device: str, quick: bool, dl: Deadline) -> dict[str, Any]:
    import torch
    sync = sync_fn(device)
    pool = realistic_params(256, seed=2)
    batches = (1, 4) if quick else (1, 4, 8, 16, 64)
    target = 0.15 if quick else 0.6
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"device": device, "rows": rows, "note": "yuv420p is what the live and offline "
                           "pipelines use (avatar/render.py, web/resources.py); ms_per_frame = ms_per_call / batch"}

    def run(size: int, fmt: str, dev: str, batch: int, r: Any, threads: int | None) -> None:
        if dl.left() < 15:
            rows.append({"size": size, "format": fmt, "device": dev, "batch": batch, "skipped": "time budget"})
            return
        p = pool.to(dev)
        starts = list(range(0, len(p) - batch + 1, max(batch, 7)))
        k = [0]

        def call() -> None:
            i = starts[k[0] % len(starts)]
            k[0] += 1
            r(p[i:i + batch])
        with torch.inference_mode():
            t = time_calls(call, sync_fn(dev), target_s=target)
        row = {"size": size, "format": fmt, "device": dev, "batch": batch, "threads": threads,
               "ms_per_call": 1000 * t["best_s"], "ms_per_frame": 1000 * t["best_s"] / batch,
               "ms_per_frame_median": 1000 * t["median_s"] / batch, "frames_per_s": batch / t["best_s"],
               "iters": t["iters"]}
        rows.append(row)
        log(f"  render {dev} {size} {fmt} b{batch}{'' if threads is None else f' {threads}thr'}: "
            f"{row['ms_per_frame']:.3f} ms/frame ({row['ms_per_call']:.3f} ms/call)")

    for size in (256, 512):
        for fmt in ("yuv420p", "rgb24"):
            try:
                rd = on_device(cpu_renderer(size, fmt), device)
                for b in (batches if fmt == "yuv420p" else (1, 16) if not quick else (1,)):
                    run(size, fmt, device, b, rd, None if device.startswith("cuda") else torch.get_num_threads())
                if device.startswith("cuda") and torch.cuda.is_available():
                    out.setdefault("max_memory_allocated_mib", {})[f"{size}_{fmt}"] = \
                        round(torch.cuda.max_memory_allocated() / 2**20, 1)
            except Exception as exc:  # noqa: BLE001
                rows.append({"size": size, "format": fmt, "device": device,
                             "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)})
                log(f"  render {device} {size} {fmt}: ERROR {exc!r}")
    # CPU reference, one thread (what the project's CPU deployments use)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for size in (256, 512):
            for fmt, bs in (("yuv420p", (1, 4)), ("rgb24", (1,))):
                try:
                    for b in bs:
                        run(size, fmt, "cpu", b, cpu_renderer(size, fmt), 1)
                except Exception as exc:  # noqa: BLE001
                    rows.append({"size": size, "format": fmt, "device": "cpu", "error": f"{type(exc).__name__}: {exc}"})
    finally:
        torch.set_num_threads(prev)
    return out


def part_render_profile(device: str, quick: bool) -> dict[str, Any]:
    """Where the renderer's time goes on the device: kernel count and GPU-busy time per call
    (a launch-bound renderer has GPU time far below wall time), and the CPU-GPU sync points."""
    import torch
    if not device.startswith("cuda"):
        return {"skipped": "device is not cuda"}
    from torch.profiler import ProfilerActivity, profile
    out: dict[str, Any] = {}
    pool = realistic_params(64, seed=3).to(device)
    for size, b in ((512, 1), (512, 64)) if not quick else ((512, 1),):
        r = on_device(cpu_renderer(size, "yuv420p"), device)
        key = f"{size}_b{b}"
        try:
            with torch.inference_mode():
                for _ in range(3):
                    r(pool[:b])
                torch.cuda.synchronize()
                out.setdefault("sync_points_forward", {})[key] = sync_points(lambda: r(pool[:b]))
                reps = 5
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        r(pool[:b])
                    torch.cuda.synchronize()
                    wall = (time.perf_counter() - t0) / reps
            ev = prof.key_averages()
            kernels = [e for e in ev if getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type)]

            def dev_us(e: Any) -> float:
                for attr in ("self_device_time_total", "self_cuda_time_total"):
                    if hasattr(e, attr):
                        return float(getattr(e, attr))
                return 0.0
            # device-side events (kernels, memcpy, memset) only: a CPU op's self device time
            # is the same kernels counted again
            gpu_us = sum(dev_us(e) for e in kernels) / reps
            n_kernels = sum(e.count for e in kernels) / reps if kernels else None
            cpu_ops = [e for e in ev if e not in kernels]
            top_k = sorted(kernels, key=dev_us, reverse=True)[:8]
            top_ops = sorted(cpu_ops, key=dev_us, reverse=True)[:10]
            out[key] = {"wall_ms_per_call_profiled": 1000 * wall, "gpu_busy_ms_per_call": gpu_us / 1000,
                        "device_events_per_call": n_kernels,
                        "top_kernels": [{"name": e.key[:90], "device_ms_per_call": dev_us(e) / 1000 / reps,
                                         "count_per_call": e.count / reps} for e in top_k],
                        "top_ops_by_own_kernels": [{"name": e.key[:60], "device_ms_per_call": dev_us(e) / 1000 / reps,
                                                    "cpu_ms_per_call": e.self_cpu_time_total / 1000 / reps,
                                                    "count_per_call": e.count / reps} for e in top_ops]}
            log(f"  profile {key}: wall {1000 * wall:.3f} ms/call, gpu busy {gpu_us / 1000:.3f} ms, "
                f"device events/call {n_kernels}, syncs {out['sync_points_forward'][key]}")
        except Exception as exc:  # noqa: BLE001
            out[key] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)}
            log(f"  profile {key}: ERROR {exc!r}")
    return out


def part_engine(device: str, quick: bool, dl: Deadline, max_batches: tuple[int, ...] = (8,),
                paced_sessions: tuple[int, ...] = (32, 128), worker_counts: tuple[int, ...] = (1, 2),
                sizes: tuple[int, ...] | None = None) -> dict[str, Any]:
    """ModuleEngine around the yuv420p renderer (as avatar/render.py and web/resources.py
    build it), run_batch directly, then through EngineWorker + Batcher(max_batch=8)
    with concurrent sessions, as the server drives it."""
    import numpy as np
    import torch

    from engines.base import EngineWorker
    from engines.batcher import Batcher, BatchPolicy, BatchStats
    from engines.module_engine import ModuleEngine
    from pipelines.motion.params import N_PARAMS

    out: dict[str, Any] = {"device": device}
    sizes = sizes or (256, 512)
    pool_np = realistic_params(256, seed=4).numpy()
    if not device.startswith("cuda"):
        torch.set_num_threads(1)  # what configure_torch_threads does on CPU deployments

    def build(size: int) -> ModuleEngine:
        base = cpu_renderer(size, "yuv420p")
        return ModuleEngine(f"renderer-{size}", lambda dev: copy.deepcopy(base), device=device,
                                example={"params": torch.zeros(N_PARAMS)})

    for size in sizes:
        res: dict[str, Any] = {}
        out[str(size)] = res
        try:
            eng = build(size)
            t0 = time.perf_counter()
            eng.load()
            eng.warmup()
            res["load_warmup_s"] = time.perf_counter() - t0
            # run_batch directly: the item list the Render stage / batcher hands over
            direct = {}
            for b in ((1, 4) if quick else (1, 4, 8, 16)):
                items = [{"params": torch.from_numpy(pool_np[i])} for i in range(b)]
                outs = eng.run_batch(items)
                assert len(outs) == b and outs[0].device.type == "cpu" and outs[0].dtype == torch.uint8, \
                    (len(outs), outs[0].device, outs[0].dtype)
                _ = outs[0].numpy()  # what pipelines/render/stage.py does with each image
                t = time_calls(lambda items=items: eng.run_batch(items), lambda: None, target_s=0.15 if quick else 0.5)
                direct[str(b)] = {"ms_per_call": 1000 * t["best_s"], "frames_per_s": b / t["best_s"]}
                log(f"  engine {size} run_batch b{b}: {1000 * t['best_s']:.3f} ms/call = {b / t['best_s']:.0f} frames/s")
            res["run_batch"] = direct
            res["output_shape"] = list(outs[0].shape)
            if device.startswith("cuda"):
                res["sync_points_run_batch_b4"] = sync_points(
                    lambda: eng.run_batch([{"params": torch.from_numpy(pool_np[i])} for i in range(4)]))
            eng.close()
        except Exception as exc:  # noqa: BLE001
            res["error"] = f"{type(exc).__name__}: {exc}"
            res["traceback"] = traceback.format_exc(limit=6)
            log(f"  engine {size}: ERROR {exc!r}")
            continue

        async def closed_loop(batcher: Batcher[Any, Any], sessions: int, seconds: float) -> dict[str, Any]:
            """Each session sends one frame, waits for it, sends the next (live_call's Render,
            max_batch=1, flat out): the throughput the batcher reaches with that many sessions."""
            batcher.stats = BatchStats()
            lat: list[float] = []
            stop = time.perf_counter() + seconds

            async def session(i: int) -> int:
                k = 0
                while time.perf_counter() < stop:
                    p = torch.from_numpy(pool_np[(i * 37 + k) % len(pool_np)])
                    t0 = time.perf_counter()
                    [img] = await batcher.run([{"params": p}])
                    lat.append(time.perf_counter() - t0)
                    k += 1
                return k
            t0 = time.perf_counter()
            counts = await asyncio.gather(*(session(i) for i in range(sessions)))
            wall = time.perf_counter() - t0
            lat_ms = np.array(lat) * 1000
            return {"sessions": sessions, "frames": int(sum(counts)), "frames_per_s": sum(counts) / wall,
                    "mean_batch": batcher.stats.mean_batch, "largest_batch": batcher.stats.largest,
                    "calls": batcher.stats.calls, "latency_ms_p50": float(np.percentile(lat_ms, 50)),
                    "latency_ms_p95": float(np.percentile(lat_ms, 95)), "latency_ms_max": float(lat_ms.max())}

        async def paced(batcher: Batcher[Any, Any], sessions: int, seconds: float, fps: int = 25,
                        ) -> dict[str, Any]:
            """Each session sends a frame every 1/fps s (staggered), as live sessions do; a frame
            is late when it comes back after its 1/fps slot."""
            batcher.stats = BatchStats()
            loop = asyncio.get_running_loop()
            lat: list[float] = []
            t_base = loop.time() + 0.05
            n = int(seconds * fps)
            give_up = t_base + seconds + 2.0  # an engine that cannot keep up must not stall the run
            unsent = [0]

            async def session(i: int) -> None:
                for k in range(n):
                    due = t_base + (k + i / sessions) / fps
                    if loop.time() > give_up:
                        unsent[0] += n - k
                        return
                    await asyncio.sleep(max(due - loop.time(), 0))
                    p = torch.from_numpy(pool_np[(i * 37 + k) % len(pool_np)])
                    t0 = time.perf_counter()
                    await batcher.run([{"params": p}])
                    lat.append(time.perf_counter() - t0)
            await asyncio.gather(*(session(i) for i in range(sessions)))
            lat_ms = np.array(lat) * 1000
            return {"sessions": sessions, "fps_each": fps, "frames": len(lat), "frames_not_sent": unsent[0],
                    "mean_batch": batcher.stats.mean_batch,
                    "largest_batch": batcher.stats.largest, "latency_ms_p50": float(np.percentile(lat_ms, 50)),
                    "latency_ms_p95": float(np.percentile(lat_ms, 95)), "latency_ms_max": float(lat_ms.max()),
                    "late_frac": float((lat_ms > 1000 / fps).mean())}

        async def drive() -> None:
            for n_workers, mb in [(w, m) for w in ((1,) if quick else worker_counts) for m in max_batches]:
                key = f"batcher_workers{n_workers}" + ("" if mb == 8 else f"_maxbatch{mb}")
                if dl.left() < 20:
                    res[key] = {"skipped": "time budget"}
                    continue
                workers = [EngineWorker(build(size)) for _ in range(n_workers)]
                for w in workers:
                    await w.start()
                batcher = Batcher(workers[0], BatchPolicy(max_batch=mb), replicas=workers[1:])
                rows: list[dict[str, Any]] = []
                res[key] = {"max_batch": mb, "closed_loop": rows, "paced": []}
                try:
                    for s in ((1, 4) if quick else tuple(sorted({1, 4, 8, 16, 32, mb, 2 * mb}))):
                        if dl.left() < 15:
                            rows.append({"sessions": s, "skipped": "time budget"})
                            continue
                        r = await closed_loop(batcher, s, 0.4 if quick else 1.0)
                        rows.append(r)
                        log(f"  batcher {size} workers {n_workers} closed loop {s} sessions: "
                            f"{r['frames_per_s']:.0f} frames/s, mean batch {r['mean_batch']:.2f}, "
                            f"p95 {r['latency_ms_p95']:.2f} ms")
                    for s in ((8,) if quick else paced_sessions):
                        if dl.left() < 15:
                            res[key]["paced"].append({"sessions": s, "skipped": "time budget"})
                            continue
                        r = await paced(batcher, s, 0.6 if quick else 2.0)
                        res[key]["paced"].append(r)
                        log(f"  batcher {size} workers {n_workers} max batch {mb} paced {s} x 25 fps: p95 {r['latency_ms_p95']:.2f} ms,"
                            f" late {100 * r['late_frac']:.1f} %, mean batch {r['mean_batch']:.2f}")
                finally:
                    await batcher.close()
        try:
            asyncio.run(drive())
        except Exception as exc:  # noqa: BLE001
            res["batcher_error"] = f"{type(exc).__name__}: {exc}"
            res["batcher_traceback"] = traceback.format_exc(limit=6)
            log(f"  batcher {size}: ERROR {exc!r}")
    return out


def part_subprocess(device: str, quick: bool, dl: Deadline) -> dict[str, Any]:
    """The server's default renderer path: each copy in a child process (engines/
    subprocess_engine.py), the child on `device`. Same frames as in a thread? Cost per call?"""
    import asyncio
    import functools

    from engines import EngineWorker
    from engines.subprocess_engine import SubprocessEngine
    from pipelines.render.engine import renderer_engine

    out: dict[str, Any] = {"device": device}
    size = 256 if quick else 512
    pool = realistic_params(64, seed=5)

    async def drive() -> None:
        make = functools.partial(renderer_engine, avatar(size), f"renderer-{size}", device)
        t0 = time.perf_counter()
        child = EngineWorker(SubprocessEngine(f"renderer-{size}", make))
        await child.start()
        out["child_start_s"] = time.perf_counter() - t0
        local = EngineWorker(make())
        await local.start()
        try:
            for b in ((1, 4) if quick else (1, 16, 64)):
                items = [{"params": pool[i]} for i in range(b)]
                got, want = await child.run(items), await local.run(items)
                diff = max(int((g.int() - w.int()).abs().max()) for g, w in zip(got, want, strict=True))
                times = {}
                for name, w in (("child", child), ("thread", local)):
                    n = 5 if quick else 30
                    t0 = time.perf_counter()
                    for _ in range(n):
                        await w.run(items)
                    times[name] = (time.perf_counter() - t0) / n * 1000
                out[f"b{b}"] = {"max_abs_child_vs_thread": diff, "ms_per_call_child": times["child"],
                                "ms_per_call_thread": times["thread"]}
                log(f"  subprocess {size} b{b}: child {times['child']:.2f} ms/call, thread {times['thread']:.2f}"
                    f" ms/call, max diff {diff}")
                if dl.left() < 10:
                    break
        finally:
            await child.close()
            await local.close()

    asyncio.run(drive())
    return out


def speechlike_audio(seconds: float, seed: int, sr: int = 16000) -> Any:
    """A voiced, syllable-modulated signal with fricative bursts and pauses (and one span of
    digital silence, which the model's at_rest gate must send to rest)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6)) + 15 * np.sin(2 * np.pi * 2.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum((0.6 / k) * np.sin(k * phase) for k in range(1, 11))
    syll = np.clip(np.sin(2 * np.pi * rng.uniform(3.5, 5.0) * t + rng.uniform(0, 6)), 0, None) ** 1.5
    noise = rng.standard_normal(n) * (np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6)) > 0.85)
    x = 0.25 * voiced * syll + 0.05 * noise
    for _ in range(3):  # pauses
        a = int(rng.uniform(0, seconds - 0.5) * sr)
        x[a:a + int(0.35 * sr)] *= 0.01
    a = int(0.6 * n)
    x[a:a + int(0.3 * sr)] = 0.0  # digital silence
    x += 1e-4 * rng.standard_normal(n) * (x != 0)
    return np.clip(x, -1, 1).astype(np.float32)


def part_audio_model(device: str, quick: bool, dl: Deadline) -> dict[str, Any]:
    import numpy as np
    import torch

    from pipelines.audio.features import log_mel
    from pipelines.motion.audio_model import StreamingAudioToMotion, load_audio_model

    sessions, seconds = (8, 2.0) if quick else (64, 10.0)
    out: dict[str, Any] = {"device": device, "sessions": sessions, "seconds_each": seconds}
    t0 = time.perf_counter()
    model_cpu, manifest = load_audio_model()
    out["load_s"] = time.perf_counter() - t0
    out["parameters"] = model_cpu.n_parameters()
    t0 = time.perf_counter()
    feats = torch.from_numpy(np.stack([log_mel(speechlike_audio(seconds, seed)) for seed in range(sessions)]))
    out["features_shape"] = list(feats.shape)
    out["features_s"] = time.perf_counter() - t0
    model_dev = copy.deepcopy(model_cpu).to(device).eval()
    sync = sync_fn(device)

    # correctness: same input, CPU vs device
    n_cmp = min(sessions, 8)
    y_cpu = model_cpu.predict(feats[:n_cmp])
    y_dev = model_dev.predict(feats[:n_cmp].to(device)).cpu()
    d = (y_cpu - y_dev).abs()
    out["cpu_vs_device"] = {"sessions_compared": n_cmp, "max_abs": float(d.max()), "mean_abs": float(d.mean()),
                            "output_range": [float(y_cpu.min()), float(y_cpu.max())],
                            "output_shape": list(y_cpu.shape)}
    # batch invariance on the device: one session alone vs inside the full batch
    y_all = model_dev.predict(feats.to(device)).cpu()
    y_one = model_dev.predict(feats[:1].to(device)).cpu()
    out["device_batch_vs_single_max_abs"] = float((y_all[:1] - y_one).abs().max())
    log(f"  audio model cpu vs {device}: max {out['cpu_vs_device']['max_abs']:.2e} "
        f"mean {out['cpu_vs_device']['mean_abs']:.2e}; batch-vs-single {out['device_batch_vs_single_max_abs']:.2e}")
    if device.startswith("cuda"):
        out["sync_points_predict_b8"] = sync_points(lambda: model_dev.predict(feats[:8].to(device)))

    # throughput, whole-signal predict (the offline path shape)
    tp: dict[str, Any] = {}
    fd = feats.to(device)
    for b in sorted({1, 8, sessions}):
        if dl.left() < 10:
            tp[str(b)] = {"skipped": "time budget"}
            continue
        t = time_calls(lambda b=b: model_dev.predict(fd[:b]), sync, target_s=0.2 if quick else 0.6)
        tp[str(b)] = {"ms_per_call": 1000 * t["best_s"], "audio_s_per_s": b * seconds / t["best_s"]}
        log(f"  audio model {device} batch {b} x {seconds:.0f} s: {1000 * t['best_s']:.2f} ms "
            f"= {b * seconds / t['best_s']:.0f} s of audio per s")
    out["throughput_device"] = tp
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = time_calls(lambda: model_cpu.predict(feats[:1]), lambda: None, target_s=0.3, min_iters=1, warmup=1)
        out["throughput_cpu_1thread_batch1"] = {"ms_per_call": 1000 * t["best_s"], "audio_s_per_s": seconds / t["best_s"]}
        log(f"  audio model cpu 1 thread batch 1: {seconds / t['best_s']:.0f} s of audio per s")
    finally:
        torch.set_num_threads(prev)

    # streaming path (what AudioMotionEngine runs): 20 ms chunks through StreamingAudioToMotion
    chunk = 320
    audio = speechlike_audio(2.0, 99)
    st_cpu = StreamingAudioToMotion(model_cpu, 80)
    ref = np.concatenate([st_cpu.push(audio[i:i + chunk])[1] for i in range(0, len(audio), chunk)])
    try:
        st_dev = StreamingAudioToMotion(model_dev, 80)
        t0 = time.perf_counter()
        got = np.concatenate([st_dev.push(audio[i:i + chunk])[1] for i in range(0, len(audio), chunk)])
        out["streaming_on_device"] = {"ok": True, "max_abs_vs_cpu": float(np.abs(got - ref).max()),
                                      "ms_per_20ms_chunk": 1000 * (time.perf_counter() - t0) / (len(audio) // chunk)}
    except Exception as exc:  # noqa: BLE001
        out["streaming_on_device"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    log(f"  streaming on {device}: {out['streaming_on_device']}")
    return out


# --------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="where to write the JSON of results")
    ap.add_argument("--device", default="cuda", help="device under test (default cuda); cpu for a dry run")
    ap.add_argument("--quick", action="store_true", help="few frames / iterations (a dry run, < 1 min on CPU)")
    ap.add_argument("--budget-s", type=float, default=200.0, help="stop starting new measurements after this")
    ap.add_argument("--no-block", action="store_true", help="do not block the packages the GPU machine lacks")
    ap.add_argument("--parts", nargs="*", default=None,
                    help="subset of: correctness speed profile engine audio subprocess")
    ap.add_argument("--max-batch", type=int, nargs="+", default=[8], help="batcher max_batch values to try")
    ap.add_argument("--paced-sessions", type=int, nargs="+", default=[32, 128],
                    help="sessions at 25 fps each for the paced batcher runs")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="engine workers behind the batcher")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="frame sizes for the engine part")
    args = ap.parse_args()

    blocker = None
    if not args.no_block:
        blocker = _Blocker()
        sys.meta_path.insert(0, blocker)
    for m in list(sys.modules):  # a module already imported would dodge the blocker
        if m.split(".")[0] in ABSENT:
            log(f"warning: {m} was imported before the blocker")

    res = Results(args.out)
    dl = Deadline(args.budget_s)
    log(f"gpu_check: device {args.device}, quick {args.quick}, budget {args.budget_s:.0f} s, out {args.out}")
    res.data["args"] = vars(args)
    try:  # first, so that it sees what the project's modules import (env probes more packages)
        res.data["parts"]["imports"] = part_imports(blocker)
        log(f"imports: absent packages imported {res.data['parts']['imports']['absent_packages_imported']}, "
            f"blocked attempts {res.data['parts']['imports']['blocked_import_attempts']}, failed "
            f"{[m for m, v in res.data['parts']['imports']['modules'].items() if v.startswith('FAILED')]}")
    except Exception as exc:  # noqa: BLE001
        res.data["parts"]["imports"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        res.data["env"] = part_env(args)
        log(f"env: {json.dumps(res.data['env'], default=_jsonable)}")
    except Exception as exc:  # noqa: BLE001
        res.data["env"] = {"error": f"{type(exc).__name__}: {exc}"}
    res.save()
    device = args.device
    parts: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("correctness", lambda: part_correctness(device, args.quick)),
        ("speed", lambda: part_render_speed(device, args.quick, dl)),
        ("profile", lambda: part_render_profile(device, args.quick)),
        ("engine", lambda: part_engine(device, args.quick, dl, tuple(args.max_batch), tuple(args.paced_sessions),
                                       tuple(args.workers), tuple(args.sizes) if args.sizes else None)),
        ("audio", lambda: part_audio_model(device, args.quick, dl)),
        ("subprocess", lambda: part_subprocess(device, args.quick, dl)),
    ]
    import torch
    threads0 = torch.get_num_threads()
    for name, fn in parts:
        if args.parts is not None and name not in args.parts:
            continue
        if dl.left() < 10:
            res.data["parts"][name] = {"skipped": f"time budget ({args.budget_s:.0f} s) spent"}
            log(f"{name}: skipped (budget)")
            res.save()
            continue
        log(f"{name} ...")
        t0 = time.perf_counter()
        try:
            res.data["parts"][name] = fn()
        except Exception as exc:  # noqa: BLE001
            res.data["parts"][name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
            log(f"{name}: ERROR {type(exc).__name__}: {exc}")
        finally:
            torch.set_num_threads(threads0)
        res.data["part_seconds"][name] = round(time.perf_counter() - t0, 2)
        log(f"{name} done in {res.data['part_seconds'][name]:.1f} s")
        res.save()
    res.data["absent_packages_imported_at_end"] = sorted({m.split(".")[0] for m in sys.modules} & set(ABSENT))
    res.data["blocked_import_attempts_at_end"] = sorted(set(blocker.attempts)) if blocker else "blocking off"
    res.data["third_party_loaded_at_end"] = sorted({m.split(".")[0] for m in sys.modules
                                                    if m.split(".")[0] not in sys.stdlib_module_names
                                                    and not m.startswith("_") and m.split(".")[0] not in PROJECT})
    res.data["finished"] = True
    res.save()
    log(f"wrote {args.out} ({res.data['elapsed_s']:.1f} s); absent packages imported: "
        f"{res.data['absent_packages_imported_at_end']}, blocked attempts: {res.data['blocked_import_attempts_at_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
