"""Eager PyTorch backend: the module as written, under inference mode, on CPU or CUDA."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from .base import Engine

Inputs = Mapping[str, torch.Tensor]


class EagerTorchEngine(Engine[Inputs, torch.Tensor]):
    """Stacks each named input of a batch along dim 0, calls the module once, splits the result.

    `build(device)` constructs the module; `example` (one item) is used by `warmup`.
    """

    def __init__(self, name: str, build: Callable[[torch.device], torch.nn.Module], *,
                 device: str | torch.device = "cpu", example: Inputs | None = None) -> None:
        self.name = name
        self.device = torch.device(device)
        self._build = build
        self._example = example
        self.module: torch.nn.Module | None = None

    def load(self) -> None:
        self.module = self._build(self.device).to(self.device).eval()

    def warmup(self) -> None:
        if self._example is not None:
            self.run_batch([self._example])

    def run_batch(self, items: Sequence[Inputs]) -> list[torch.Tensor]:
        if self.module is None:
            raise RuntimeError(f"engine {self.name!r} used before load()")
        keys = items[0].keys()
        batch = {k: torch.stack([it[k] for it in items]).to(self.device, non_blocking=True) for k in keys}
        with torch.inference_mode():
            out = self.module(**batch)
        if self.device.type == "cuda":
            out = out.cpu()  # synchronizes: the result is ready when the future resolves
        return list(out.unbind(0))

    def close(self) -> None:
        self.module = None
