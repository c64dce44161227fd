"""Choosing the device a model runs on belongs to the engine layer: the server and the CLI
name a setting ("cpu", "cuda", "auto") and get a device, without importing torch themselves."""
from __future__ import annotations


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def pick_device(name: str) -> str:
    """"auto": CUDA when this torch build sees a device, else the CPU. ValueError for "cuda"
    without one."""
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name == "cuda" and not cuda_available():
        raise ValueError("--device cuda asked for, but this torch build sees no CUDA device")
    return name
