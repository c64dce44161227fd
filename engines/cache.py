"""An on-disk cache of what engines build at start-up: exported ONNX graphs, compiled
kernels, the autotune's measurements.

    cache = ArtifactCache.default()
    key = cache.key(model=model_hash(module), backend="onnxruntime", shapes=[(4, 18)],
                    dtype="float32", device="cpu")
    blob = cache.get(key) or cache.put(key, export())

A key is a hash of everything the artifact depends on: the model's weights and code
(`model_hash`), the backend, input shapes, dtype, device, and the versions of the libraries
that made it (`library_versions`: Python, torch, onnxruntime, torch-tensorrt, this
package). Change any of them and the key changes, so a stale artifact is never loaded: it is
simply not found, and rebuilt. Writes go to a temporary file renamed into place, so a crash
or a concurrent start never leaves (or reads) a partial entry.

Where: `$AVATAR_CACHE_DIR`, else `$XDG_CACHE_HOME/avatar-engine`, else ~/.cache/avatar-engine.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VERSIONED = ("torch", "onnxruntime", "torch-tensorrt", "avatar-engine")


def library_versions() -> dict[str, str]:
    """Versions an artifact depends on ("absent" for a library not installed)."""
    out = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def model_hash(module: Any) -> str:
    """A hash of a torch module's class, its `cache_tag` (settings that are not tensors, e.g.
    an output format) and its buffers and parameters: the same weights and reference images
    give the same hash, any change another one."""
    import torch

    h = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    h.update(str(getattr(module, "cache_tag", "")).encode())  # configuration that is not a tensor
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


class ArtifactCache:
    def __init__(self, root: str | os.PathLike[str], versions: Mapping[str, str] | None = None) -> None:
        self.root = Path(root)
        self.versions = dict(library_versions() if versions is None else versions)
        self.hits = 0
        self.misses = 0

    @classmethod
    def default(cls) -> ArtifactCache:
        root = os.environ.get("AVATAR_CACHE_DIR")
        if not root:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
            root = os.path.join(base, "avatar-engine")
        return cls(root)

    def key(self, *, model: str, backend: str, shapes: Iterable[Iterable[int]], dtype: str,
            device: str, extra: Mapping[str, Any] | None = None) -> str:
        desc = {"model": model, "backend": backend, "shapes": [list(s) for s in shapes], "dtype": dtype,
                "device": device, "versions": self.versions, "extra": dict(extra or {})}
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:40]

    def _path(self, key: str, kind: str) -> Path:
        return self.root / f"{key}.{kind}"

    def get(self, key: str, kind: str = "bin") -> bytes | None:
        try:
            data = self._path(key, kind).read_bytes()
        except OSError:
            self.misses += 1
            return None
        self.hits += 1
        return data

    def put(self, key: str, data: bytes, kind: str = "bin") -> bytes:
        """Store `data` (atomically) and return it. A cache that cannot be written (read-only
        disk, full disk) is logged and skipped: the engine runs, the next start rebuilds."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self._path(key, kind))
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("engine cache %s not written: %s", self.root, exc)
        return data

    def get_json(self, key: str) -> Any | None:
        raw = self.get(key, "json")
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:  # written by something else: treat as absent
            return None

    def put_json(self, key: str, value: Any) -> None:
        self.put(key, json.dumps(value, sort_keys=True).encode(), "json")
