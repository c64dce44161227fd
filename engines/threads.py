"""Torch's intra-op thread pool is process-wide: set it once, deliberately.

A 2-core machine serving several sessions must not let each engine start its own pool of
`nproc` threads; the CLI and the server call `configure_torch_threads` from their settings.
"""
from __future__ import annotations

import torch


def configure_torch_threads(n: int | None = None) -> int:
    """Default 1: OpenMP workers spin while waiting, so on a small box a second intra-op
    thread fights the codec and TTS threads and everything gets slower (measured: a 512x512
    frame took ~10 ms with 1 thread and >60 ms with 2 while the encoder ran)."""
    n = n or 1
    torch.set_num_threads(n)
    return n
