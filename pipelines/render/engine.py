"""The renderer as an engine: what the server's render workers run (in a thread, or in a
child process through engines.SubprocessEngine, which pickles this factory)."""
from __future__ import annotations

import torch

from engines.cache import ArtifactCache
from engines.module_engine import ModuleEngine
from pipelines.motion.params import N_PARAMS

from .avatar import Avatar
from .renderer import WarpRenderer


def renderer_engine(avatar: Avatar, name: str, device: str = "cpu", output: str = "yuv420p",
                    backend: str = "eager", cache_dir: str | None = None) -> ModuleEngine:
    """`backend`: eager, compile, onnxruntime, tensorrt or auto (engines/module_engine.py)."""
    cache = ArtifactCache(cache_dir) if cache_dir else ArtifactCache.default()
    return ModuleEngine(name, lambda dev: WarpRenderer(avatar, output=output), device=device,
                        example={"params": torch.zeros(N_PARAMS)}, backend=backend, cache=cache)
