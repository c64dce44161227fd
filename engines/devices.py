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


class GpuMemoryCollector:
    """`avatar_gpu_memory_bytes{device,kind}` (kind: allocated by tensors, reserved by torch's
    caching allocator) at each scrape, for every CUDA device this process sees; nothing on a
    machine without one. Only reads torch if the engines already imported it."""

    def __init__(self, namespace: str = "avatar") -> None:
        self.namespace = namespace

    def collect(self):  # type: ignore[no-untyped-def]
        import sys

        from prometheus_client.core import GaugeMetricFamily

        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            return
        g = GaugeMetricFamily(f"{self.namespace}_gpu_memory_bytes", "GPU memory of this process by CUDA "
                              "device: allocated by tensors, reserved by torch's caching allocator",
                              labels=["device", "kind"])
        for i in range(torch.cuda.device_count()):
            g.add_metric([f"cuda:{i}", "allocated"], float(torch.cuda.memory_allocated(i)))
            g.add_metric([f"cuda:{i}", "reserved"], float(torch.cuda.memory_reserved(i)))
        yield g
