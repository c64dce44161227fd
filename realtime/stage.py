"""The stage contract.

A stage declares its ports (`inputs`, `outputs`) and implements `run(ctx)`, reading frames
from its input channels and writing to its outputs. Most stages are transforms: subclass
`MapStage` and implement `process(frame)`, an async generator of output frames; the base
class measures latency against the stage's budget, counts frames, and forwards in-stream
markers untouched. Heavy compute belongs in an engine (`engines/`), never on the loop.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from .channel import Channel
from .clock import Clock, MediaClock
from .events import SessionEvent
from .frames import Frame
from .metrics import RuntimeMetrics


@dataclass(frozen=True, slots=True)
class Event:
    """An untyped report (`ctx.event(kind, **data)`), for one-off events of offline recipes;
    what live sessions report is typed (realtime/events.py, `ctx.report`)."""

    kind: str
    session_id: str
    data: dict[str, Any]


AnyEvent = Event | SessionEvent


@dataclass(slots=True)
class StageContext:
    """What a running stage may touch: its channels, the clocks, metrics and events."""

    graph: str
    stage: str
    session_id: str
    clock: Clock
    media_clock: MediaClock
    metrics: RuntimeMetrics
    inputs: dict[str, Channel[Any]]
    outputs: dict[str, Channel[Any]]
    emit: Callable[[AnyEvent], None]
    epoch: Callable[[], int]

    def input(self, port: str = "in") -> Channel[Any]:
        return self.inputs[port]

    def output(self, port: str = "out") -> Channel[Any]:
        return self.outputs[port]

    @property
    def paced(self) -> bool:
        return self.media_clock.paced

    def stamp(self, media_time_s: float) -> dict[str, Any]:
        """Timing fields for a frame entering the graph now, presented at `media_time_s`."""
        return {"entered": self.clock.now(), "deadline": self.media_clock.due(media_time_s),
                "epoch": self.epoch()}

    def event(self, kind: str, /, **data: Any) -> None:
        self.emit(Event(kind, self.session_id, data))

    def report(self, event: SessionEvent) -> None:
        """A typed event, stamped with this session's id, to the session's subscribers."""
        self.emit(replace(event, session_id=self.session_id))

    def meter(self, stage: Stage) -> StageMeter:
        return StageMeter(self, stage)


class StageMeter:
    """Counts a stage's frames and times its work against its budget (Prometheus)."""

    def __init__(self, ctx: StageContext, stage: Stage) -> None:
        m, g, name = ctx.metrics, ctx.graph, stage.name
        self.budget_s = stage.budget_s
        self._latency = m.stage_latency.labels(g, name)
        self._in = m.frames_in.labels(g, name)
        self._out = m.frames_out.labels(g, name)
        self._over = m.budget_exceeded.labels(g, name)

    def frames_in(self, n: int = 1) -> None:
        self._in.inc(n)

    def frames_out(self, n: int = 1) -> None:
        self._out.inc(n)

    def work(self, seconds: float, frames: int = 1) -> None:
        """`seconds` of work produced `frames` frames: observed per frame."""
        per = seconds / max(frames, 1)
        for _ in range(max(frames, 1)):
            self._latency.observe(per)
        if per > self.budget_s:
            self._over.inc(max(frames, 1))


class Stage(ABC):
    inputs: ClassVar[tuple[str, ...]] = ("in",)
    outputs: ClassVar[tuple[str, ...]] = ("out",)

    def __init__(self, name: str, *, budget_s: float = 0.040) -> None:
        self.name = name
        self.budget_s = budget_s

    async def setup(self, ctx: StageContext) -> None:
        """Acquire resources (engines, files) before any frame flows."""

    @abstractmethod
    async def run(self, ctx: StageContext) -> None: ...

    async def teardown(self) -> None:
        """Release resources; called once, after run ended for any reason."""


class MapStage(Stage):
    """One input, one output: `process` turns each frame into zero or more frames."""

    @abstractmethod
    def process(self, frame: Any, ctx: StageContext) -> AsyncIterator[Any]: ...

    async def on_marker(self, marker: Any, ctx: StageContext) -> AsyncIterator[Any]:
        """In-stream markers (not frames) pass through by default."""
        yield marker

    async def run(self, ctx: StageContext) -> None:
        inp, out = ctx.input(), ctx.output()
        meter = ctx.meter(self)
        now = ctx.clock.now
        async for item in inp:
            if not isinstance(item, Frame):
                async for marker in self.on_marker(item, ctx):
                    await out.put(marker)
                continue
            meter.frames_in()
            # Stage latency is our own time: from take to last output handed on, excluding
            # time blocked on a full output (that is backpressure, not this stage's cost).
            t0, blocked = now(), 0.0
            async for produced in self.process(item, ctx):
                b0 = now()
                await out.put(produced)
                blocked += now() - b0
                meter.frames_out()
            meter.work(now() - t0 - blocked)
