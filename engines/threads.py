"""Torch's intra-op thread pool is process-wide: set it once, deliberately.

A 2-core machine serving several sessions must not let each engine start its own pool of
`nproc` threads; the CLI and the server call `configure_torch_threads` from their settings.
"""
from __future__ import annotations

import os

import torch


def configure_torch_threads(n: int | None = None) -> int:
    n = n or max(1, min(4, os.cpu_count() or 1))
    torch.set_num_threads(n)
    return n
