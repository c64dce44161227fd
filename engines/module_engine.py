"""A torch module behind the engine interface, run by one of the backends of backends.py.

    engine = ModuleEngine("renderer", build, example={"params": torch.zeros(18)},
                          backend="auto", cache=ArtifactCache.default())

Each item is a dict of named tensors; a batch stacks them along dim 0, runs the module once
and splits the result. A module may name `static_parts`: methods whose shapes depend on the
batch size alone (the renderer's warp and its final paste). Compiling backends compile or
export those and leave the rest eager (the renderer's mouth works on a box that follows the
lips, a new shape every frame); a module without them is compiled whole.

Shape-specialised backends (compile, tensorrt) see only the batch sizes in `buckets`: a
batch is padded up to the next bucket (its last item repeated) and the padding dropped from
the result, so a server compiles a handful of graphs at start-up, never one mid-call.

backend="auto": every backend available here is built and timed on the example at batch
1 and at the largest bucket up to 4; the fastest (ms per item, both batch sizes together) is
kept, the others closed. The choice and the figures are in `describe()` and the log; the
measurement is cached (engines/cache.py) with the compiled artifacts, so a second start
builds only the chosen backend, from its cached artifacts.
"""
from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from . import backends as bk
from .base import Engine
from .cache import ArtifactCache, model_hash

log = logging.getLogger(__name__)

Inputs = Mapping[str, torch.Tensor]
DEFAULT_BUCKETS = (1, 2, 4, 8)


class ModuleEngine(Engine[Inputs, torch.Tensor]):
    def __init__(self, name: str, build: Callable[[torch.device], torch.nn.Module], *,
                 device: str | torch.device = "cpu", example: Inputs | None = None,
                 backend: str = "eager", buckets: Sequence[int] = DEFAULT_BUCKETS,
                 cache: ArtifactCache | None = None, autotune_repeats: int = 12,
                 candidates: Sequence[str] = bk.BACKENDS) -> None:
        if backend != "auto" and backend not in bk.BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose auto or one of {', '.join(bk.BACKENDS)}")
        self.name = name
        self.device = torch.device(device)
        self.requested = backend
        self.backend = backend  # the one in use once loaded
        self.buckets = tuple(sorted(set(buckets)))
        self._build, self._example = build, example
        self.cache = cache
        self.autotune_repeats = autotune_repeats
        self.candidates = tuple(candidates)  # what backend="auto" tries
        self.module: torch.nn.Module | None = None
        self._pad = False
        self.timings: dict[str, Any] = {}  # autotune: backend -> ms per item, or why not
        self.load_s = 0.0

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        t0 = time.perf_counter()
        if self.requested == "auto":
            self._autotune()
        else:
            self.module = self._prepare(self.requested)
            self.backend = self.requested
        self.load_s = time.perf_counter() - t0

    def _fresh(self) -> torch.nn.Module:
        return self._build(self.device).to(self.device).eval()

    def _prepare(self, backend: str) -> torch.nn.Module:
        bk.check(backend, str(self.device))  # BackendUnavailable: say what is missing
        module = self._fresh()
        if backend == "eager":
            return module
        if self._example is None:
            raise ValueError(f"engine {self.name!r}: backend {backend!r} needs an example input")
        parts = tuple(getattr(module, "static_parts", ())) or ("forward",)
        if backend == "onnxruntime":
            _to_onnxruntime(module, parts, self._batch([self._example] * 2), str(self.device), self.cache, self.name)
            return module
        # compile, tensorrt: one graph per bucket, compiled now (cached artifacts when present)
        key = self._key(module, backend) if self.cache is not None else None
        blob = self.cache.get(key) if self.cache is not None and key is not None else None
        if blob is not None:
            torch.compiler.load_cache_artifacts(blob)
        options: dict[str, Any] = {"dynamic": False}
        if backend == "tensorrt":
            options["backend"] = "torch_tensorrt"
        elif self.device.type == "cuda":
            options["mode"] = "reduce-overhead"  # CUDA graphs: one launch per graph
        compiled = {p: torch.compile(getattr(module, p), **options) for p in parts}
        for p, fn in compiled.items():
            if p == "forward":
                module.forward = fn  # type: ignore[method-assign]
            else:
                setattr(module, p, fn)
        self._pad = True
        self.module = module
        for b in self.buckets:
            self._run(module, [self._example] * b)
        if blob is None and self.cache is not None and key is not None:
            saved = torch.compiler.save_cache_artifacts()
            if saved is not None:
                self.cache.put(key, saved[0])
        return module

    def _key(self, module: torch.nn.Module, backend: str) -> str:
        assert self.cache is not None
        shapes = [(b, *t.shape) for b in self.buckets for t in (self._example or {}).values()]
        return self.cache.key(model=model_hash(module), backend=backend, shapes=shapes, dtype="float32",
                         device=str(self.device))

    def _autotune(self) -> None:
        here = [b for b in bk.report(str(self.device)) if b.name in self.candidates]
        probe = self._fresh()
        key = None
        if self.cache is not None:
            key = self.cache.key(model=model_hash(probe), backend="autotune",
                                 shapes=[(1, *t.shape) for t in (self._example or {}).values()],
                                 dtype="float32", device=str(self.device),
                                 extra={"available": [b.name for b in here if b.available]})
        del probe
        cached = self.cache.get_json(key) if self.cache is not None and key is not None else None
        if cached is not None and cached.get("choice") in [b.name for b in here if b.available]:
            self.timings = cached["timings"]
            self.backend = cached["choice"]
            self._pad = False
            self.module = self._prepare(self.backend)
            self.timings = {**self.timings, "cached": True}
            log.info("engine %s: backend %s (autotune cached: %s)", self.name, self.backend, _fmt(self.timings))
            return
        best: tuple[float, str, torch.nn.Module, bool] | None = None
        sizes = sorted({1, max((b for b in self.buckets if b <= 4), default=1)})
        for info in here:
            if not info.available:
                self.timings[info.name] = f"unavailable: {info.detail}"
                continue
            self._pad = False
            try:
                module = self._prepare(info.name)
            except Exception as exc:  # noqa: BLE001 - a backend that fails to build is reported, not chosen
                self.timings[info.name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                continue
            pad = self._pad
            ms = {f"batch{b}": self._time(module, b) for b in sizes}
            self.timings[info.name] = ms
            score = sum(ms.values())
            if best is None or score < best[0]:
                best = (score, info.name, module, pad)
        if best is None:
            raise bk.BackendUnavailable(f"engine {self.name!r}: no backend could be built ({self.timings})")
        _, self.backend, self.module, self._pad = best
        log.info("engine %s: backend %s chosen by autotune (ms per item: %s)", self.name, self.backend,
                 _fmt(self.timings))
        if self.cache is not None and key is not None:
            self.cache.put_json(key, {"choice": self.backend, "timings": self.timings})

    def _time(self, module: torch.nn.Module, batch: int) -> float:
        items = [self._example] * batch  # type: ignore[list-item]
        self._run(module, items)
        t0 = time.perf_counter()
        for _ in range(self.autotune_repeats):
            self._run(module, items)
        return round((time.perf_counter() - t0) / (self.autotune_repeats * batch) * 1000, 3)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "requested": self.requested, "device": str(self.device),
                "load_s": round(self.load_s, 2), "autotune_ms_per_item": self.timings,
                "buckets": list(self.buckets) if self._pad else []}  # batch sizes it pads to

    def warmup(self) -> None:
        if self._example is not None and self.module is not None and not self._pad:
            self.run_batch([self._example])

    # -- running ---------------------------------------------------------------------------
    def _batch(self, items: Sequence[Inputs]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([it[k] for it in items]).to(self.device, non_blocking=True) for k in items[0]}

    def _run(self, module: torch.nn.Module, items: Sequence[Inputs]) -> list[torch.Tensor]:
        n = len(items)
        if self._pad:
            size = next((b for b in self.buckets if b >= n), None)
            if size is None:  # larger than every bucket: in bucket-sized pieces
                step = self.buckets[-1]
                return [y for i in range(0, n, step) for y in self._run(module, items[i:i + step])]
            items = [*items, *[items[-1]] * (size - n)]
        with torch.inference_mode():
            out = module(**self._batch(items))
        if self.device.type == "cuda":
            out = out.cpu()  # synchronizes: the result is ready when the future resolves
        return list(out.unbind(0))[:n]

    def run_batch(self, items: Sequence[Inputs]) -> list[torch.Tensor]:
        if self.module is None:
            raise RuntimeError(f"engine {self.name!r} used before load()")
        return self._run(self.module, items)

    def close(self) -> None:
        self.module = None


def _fmt(timings: Mapping[str, Any]) -> str:
    return "; ".join(f"{k} {v}" for k, v in timings.items())


def _to_onnxruntime(module: torch.nn.Module, parts: Sequence[str], example: Mapping[str, torch.Tensor],
                    device: str, cache: ArtifactCache | None, name: str) -> None:
    """Replace each of `module`'s static parts by an onnxruntime session of it (batch axis
    dynamic), exported from the inputs each part sees on `example` (or read from the cache)."""
    import onnxruntime as ort

    seen: dict[str, tuple[torch.Tensor, ...]] = {}
    for p in parts:
        original = getattr(module, p)

        def record(*args: torch.Tensor, _p: str = p, _f: Callable[..., Any] = original) -> Any:
            seen.setdefault(_p, tuple(a.detach().clone() for a in args))
            return _f(*args)

        setattr(module, p, record)
    with torch.no_grad():
        module(**example)
    for p in parts:
        delattr(module, p)  # the class's method again
    mhash = model_hash(module)
    providers = bk.onnxruntime_providers(device)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for p in parts:
        args = seen[p]
        key = None
        blob = None
        if cache is not None:
            key = cache.key(model=mhash, backend="onnxruntime", shapes=[a.shape[1:] for a in args],
                            dtype="float32", device=device, extra={"part": p, "opset": 17})
            blob = cache.get(key, "onnx")
        if blob is None:
            blob = _export(module, p, args)
            if cache is not None and key is not None:
                cache.put(key, blob, "onnx")
        session = ort.InferenceSession(blob, opts, providers=providers)
        names = [i.name for i in session.get_inputs()]
        single = len(session.get_outputs()) == 1

        def run(*inputs: torch.Tensor, _s: Any = session, _n: list[str] = names, _one: bool = single) -> Any:
            outs = _s.run(None, {k: v.detach().cpu().numpy() for k, v in zip(_n, inputs, strict=True)})
            ts = [torch.from_numpy(o).to(module_device(inputs)) for o in outs]
            return ts[0] if _one else tuple(ts)

        setattr(module, p, run)
    log.debug("engine %s: %s in onnxruntime (%s)", name, ", ".join(parts), ", ".join(providers))


def module_device(inputs: Sequence[torch.Tensor]) -> torch.device:
    return inputs[0].device if inputs else torch.device("cpu")


class _Part(torch.nn.Module):
    def __init__(self, module: torch.nn.Module, part: str) -> None:
        super().__init__()
        self.module, self.part = module, part

    def forward(self, *args: torch.Tensor) -> Any:
        return getattr(type(self.module), self.part)(self.module, *args)


def _export(module: torch.nn.Module, part: str, args: tuple[torch.Tensor, ...]) -> bytes:
    wrapper = _Part(module, part).eval()
    with torch.no_grad():
        out = wrapper(*args)
    n_out = len(out) if isinstance(out, tuple) else 1
    inputs = [f"in{i}" for i in range(len(args))]
    outputs = [f"out{i}" for i in range(n_out)]
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notices
        torch.onnx.export(wrapper, args, buf, dynamo=False, opset_version=17, input_names=inputs,
                          output_names=outputs, dynamic_axes={n: {0: "batch"} for n in inputs + outputs})
    return buf.getvalue()
