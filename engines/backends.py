"""Which backends can run a torch module on this machine, and what each needs.

    eager        the module as written (always)
    compile      torch.compile (inductor; CUDA graphs on a CUDA device); needs a C++
                 compiler on CPU, triton on CUDA
    onnxruntime  the module's static parts exported to ONNX and run by onnxruntime (CPU
                 provider; CUDA / TensorRT providers when onnxruntime-gpu is installed)
    tensorrt     torch-tensorrt (the optional `gpu` extra) on a CUDA device

`report(device)` says for each whether it is available and, if not, why: a backend that is
not installed is reported as missing and never stands in for another.
"""
from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass

BACKENDS = ("eager", "compile", "onnxruntime", "tensorrt")


class BackendUnavailable(RuntimeError):
    """The backend asked for cannot run here (one line saying what is missing)."""


@dataclass(frozen=True, slots=True)
class BackendInfo:
    name: str
    available: bool
    detail: str  # what it will use, or why it cannot run


def _onnxruntime_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def onnxruntime_providers(device: str) -> list[str]:
    """The providers a session on `device` uses, best first; BackendUnavailable if none fits."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise BackendUnavailable("onnxruntime is not installed")
    have = _onnxruntime_providers()
    if device.startswith("cuda"):
        gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have]
        if not gpu:
            raise BackendUnavailable("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
        return [*gpu, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def check(name: str, device: str) -> str:
    """What backend `name` will use on `device`; BackendUnavailable saying what is missing."""
    cuda = device.startswith("cuda")
    if name == "eager":
        return f"torch eager on {device}"
    if name == "compile":
        if cuda:
            if importlib.util.find_spec("triton") is None:
                raise BackendUnavailable("torch.compile on CUDA needs triton, which is not installed")
            return "torch.compile (inductor, CUDA graphs)"
        cc = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
        if cc is None:
            raise BackendUnavailable("torch.compile on CPU needs a C++ compiler (g++), which is not on PATH")
        return f"torch.compile (inductor, C++ with {cc})"
    if name == "onnxruntime":
        return "onnxruntime " + ", ".join(onnxruntime_providers(device))
    if name == "tensorrt":
        if importlib.util.find_spec("torch_tensorrt") is None:
            raise BackendUnavailable("torch-tensorrt is not installed (pip install 'avatar-engine[gpu]')")
        if not cuda:
            raise BackendUnavailable("torch-tensorrt needs a CUDA device")
        return "torch-tensorrt"
    raise BackendUnavailable(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def report(device: str) -> list[BackendInfo]:
    out = []
    for name in BACKENDS:
        try:
            out.append(BackendInfo(name, True, check(name, device)))
        except BackendUnavailable as exc:
            out.append(BackendInfo(name, False, str(exc)))
    return out


def available(device: str) -> list[str]:
    return [b.name for b in report(device) if b.available]
