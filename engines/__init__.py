"""How models run: one interface (load, warm up, run a batch), backends, the worker thread."""
from .base import Engine, EngineDied, EngineWorker
from .eager import EagerTorchEngine
from .threads import configure_torch_threads
from .worker import ThreadWorker

__all__ = ["EagerTorchEngine", "Engine", "EngineDied", "EngineWorker", "ThreadWorker", "configure_torch_threads"]
