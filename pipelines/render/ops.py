"""Bilinear sampling and resizing that a compiler keeps whole.

Why: torch.compile's inductor decomposes `grid_sample` and bilinear `interpolate` into
gathers and arithmetic it generates itself; on cpu2 (AVX-512, one thread) those run 3-5x
slower than ATen's own kernels (a 4x3x300x300 grid_sample: 3.6 ms in ATen, 16 ms
decomposed; an upsample to 300x300: 1.3 ms against 3.5 ms). While compiling, these go
through custom operators, so they stay calls to ATen's kernels and the compiler fuses the
arithmetic around them; in eager mode and in an ONNX export they are the plain calls.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def grid_sample(image: torch.Tensor, grid: torch.Tensor, padding: str) -> torch.Tensor:
    """Bilinear, align_corners=True; padding "zeros" or "border"."""
    if torch.compiler.is_compiling():
        return _grid_sample(image, grid, padding)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def resize_bilinear(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, height, width), align_corners=True."""
    if torch.compiler.is_compiling():
        return _resize_bilinear(image, height, width)
    return F.interpolate(image, size=(height, width), mode="bilinear", align_corners=True)


@torch.library.custom_op("avatar::grid_sample", mutates_args=())
def _grid_sample(image: torch.Tensor, grid: torch.Tensor, padding: str) -> torch.Tensor:
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding, align_corners=True)


@_grid_sample.register_fake
def _(image: torch.Tensor, grid: torch.Tensor, padding: str) -> torch.Tensor:
    return image.new_empty(image.shape[0], image.shape[1], grid.shape[1], grid.shape[2])


@torch.library.custom_op("avatar::resize_bilinear", mutates_args=())
def _resize_bilinear(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(image, size=(height, width), mode="bilinear", align_corners=True)


@_resize_bilinear.register_fake
def _(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return image.new_empty(image.shape[0], image.shape[1], height, width)
