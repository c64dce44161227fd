"""How models run: one interface (load, warm up, run a batch), backends, the worker thread."""
from .base import Engine, EngineDied, EngineWorker
from .module_engine import ModuleEngine
from .threads import configure_torch_threads
from .worker import ThreadWorker

__all__ = ["Engine", "EngineDied", "EngineWorker", "ModuleEngine", "ThreadWorker", "configure_torch_threads"]
