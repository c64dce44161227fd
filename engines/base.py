"""The one interface every model backend implements, and the worker that runs it.

    engine.load()              build / read weights (blocking)
    engine.warmup()            run once on representative input (blocking)
    engine.run_batch(items)    a list of inputs in, a list of outputs out (blocking)

Stages never call these directly: they `await worker.run(items)`, and the worker executes
the blocking calls on its own thread, so the event loop never waits on compute. Compiled
backends and the cross-session batcher implement the same interface and slot in without
touching the stages.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Generic, TypeVar

from .worker import ThreadWorker

In = TypeVar("In")
Out = TypeVar("Out")


class EngineDied(RuntimeError):
    """The engine's process (or device) is gone, not the input's fault: the batch in hand is
    lost, and a restart (`EngineWorker.restart`) brings the engine back."""


class Engine(ABC, Generic[In, Out]):
    name: str = "engine"

    @abstractmethod
    def load(self) -> None: ...

    def warmup(self) -> None:  # noqa: B027 - optional
        """Run once on representative input so the first real call is not slow."""

    @abstractmethod
    def run_batch(self, items: Sequence[In]) -> list[Out]: ...

    def describe(self) -> dict[str, object]:
        """What runs it (backend, device, how it was chosen): for the start-up log and /v1/engines."""
        return {}

    def alive(self) -> bool:
        """False once the engine is known to be gone (its process died): cheap, asked before
        work is handed to it."""
        return True

    def close(self) -> None:  # noqa: B027 - optional
        """Free what `load` took."""


class EngineWorker(Generic[In, Out]):
    """Runs an engine on its own thread (torch releases the GIL while computing)."""

    def __init__(self, engine: Engine[In, Out]) -> None:
        self.engine = engine
        self._thread = ThreadWorker(f"engine-{engine.name}")
        self.started = False

    async def start(self) -> None:
        self._thread.start()
        await self._thread.call(self._load_and_warm)
        self.started = True

    def _load_and_warm(self) -> None:
        self.engine.load()
        self.engine.warmup()

    async def restart(self) -> None:
        """Close the engine and load it again, on its own thread (after EngineDied)."""
        self.started = False
        await self._thread.call(self.engine.close)
        await self._thread.call(self._load_and_warm)
        self.started = True

    async def run(self, items: Sequence[In]) -> list[Out]:
        if not self.started:
            raise RuntimeError(f"engine {self.engine.name!r} is not started")
        return await self._thread.call(self.engine.run_batch, items)

    async def close(self) -> None:
        if self.started:
            await self._thread.call(self.engine.close)
            self.started = False
        await self._thread.close()

    async def __aenter__(self) -> EngineWorker[In, Out]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
