"""A graph definition (stages and the channels between them) and the session that runs it.

A recipe builds one `Graph` per session; the definition reads as the data path of a frame:

    g = Graph("text_to_video")
    g.add(TextSource("text"), Synthesize("tts"), ...)
    g.link("text.out", "tts.in", capacity=2, policy=LatePolicy.BLOCK)

`Session` runs it: each stage in its own named task, supervised. When a stage's `run`
returns, its outputs close (end of stream flows downstream). When a stage raises, the
session emits an `error` event, cancels its other stages, tears everything down and raises
`SessionFailed`; other sessions are untouched. No task outlives `run` or `close`.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .channel import Channel, LatePolicy
from .clock import Clock, MediaClock, MonotonicClock
from .errors import ChannelClosed, GraphError, SessionFailed
from .metrics import RuntimeMetrics
from .events import Ended, Interrupted, SessionEvent, StageFailed
from .stage import AnyEvent, Stage, StageContext

log = logging.getLogger(__name__)
_session_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Link:
    src: str
    src_port: str
    dst: str
    dst_port: str
    capacity: int
    policy: LatePolicy

    @property
    def name(self) -> str:
        return f"{self.src}.{self.src_port}->{self.dst}.{self.dst_port}"


class Graph:
    def __init__(self, name: str, *, latency_budget_s: float = 0.200) -> None:
        self.name = name
        self.latency_budget_s = latency_budget_s  # playout delay: entry → presentation
        self.stages: dict[str, Stage] = {}
        self.links: list[Link] = []

    def add(self, *stages: Stage) -> None:
        for s in stages:
            if s.name in self.stages:
                raise GraphError(f"duplicate stage name {s.name!r}")
            self.stages[s.name] = s

    def link(self, src: str, dst: str, *, capacity: int, policy: LatePolicy) -> None:
        (a, ap), (b, bp) = _port(src), _port(dst)
        for stage, port, kind in ((a, ap, "outputs"), (b, bp, "inputs")):
            if stage not in self.stages:
                raise GraphError(f"unknown stage {stage!r} in link {src} -> {dst}")
            if port not in getattr(self.stages[stage], kind):
                raise GraphError(f"stage {stage!r} has no {kind[:-1]} port {port!r}")
        self.links.append(Link(a, ap, b, bp, capacity, policy))

    def validate(self) -> None:
        for s in self.stages.values():
            for kind, ports in (("src", s.outputs), ("dst", s.inputs)):
                for p in ports:
                    n = sum(1 for link in self.links
                            if getattr(link, kind) == s.name and getattr(link, f"{kind}_port") == p)
                    if n != 1:
                        raise GraphError(f"port {s.name}.{p} is linked {n} times (must be 1)")

    def describe(self) -> str:
        return "\n".join(f"{lk.name}  [capacity {lk.capacity}, {lk.policy.value}]" for lk in self.links)


def _port(spec: str) -> tuple[str, str]:
    stage, _, port = spec.partition(".")
    if not stage or not port:
        raise GraphError(f"expected 'stage.port', got {spec!r}")
    return stage, port


class Session:
    """One running graph, with its own media clock and epoch."""

    def __init__(self, graph: Graph, *, clock: Clock | None = None, paced: bool = True,
                 metrics: RuntimeMetrics | None = None, session_id: str | None = None,
                 on_event: Callable[[AnyEvent], None] | None = None, align_s: float | None = None) -> None:
        graph.validate()
        self.graph = graph
        self.id = session_id or f"s{next(_session_ids)}"
        self.clock = clock or MonotonicClock()
        self.media_clock = MediaClock(self.clock, paced=paced, playout_delay_s=graph.latency_budget_s,
                                      align_s=align_s)
        self.metrics = metrics or RuntimeMetrics()
        self.epoch = 0
        self.error: SessionFailed | None = None
        self._listeners: list[Callable[[AnyEvent], None]] = [on_event] if on_event else []
        self.channels: dict[str, Channel[Any]] = {
            lk.name: Channel(lk.name, capacity=lk.capacity, policy=lk.policy, clock=self.clock,
                             epoch=lambda: self.epoch, metrics=self.metrics, graph=graph.name,
                             consumer=lk.dst)
            for lk in graph.links
        }
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started_stages: list[Stage] = []

    # -- events --------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[AnyEvent], None]) -> None:
        self._listeners.append(listener)

    def report(self, event: SessionEvent) -> None:
        """An event of the session's owner (a call's barge-in, ...) into the same stream as
        the stages' own, stamped with the session id: observers read one source."""
        self._emit(replace(event, session_id=self.id))

    def _emit(self, event: AnyEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not take the session down
                log.exception("event listener failed on %s", event.kind)

    def interrupt(self) -> int:
        """Start a new epoch: everything queued or in flight from before is stale."""
        self.epoch += 1
        for ch in self.channels.values():
            ch.clear()
        self._emit(Interrupted(session_id=self.id, epoch=self.epoch))
        return self.epoch

    # -- running -------------------------------------------------------------------------
    def _context(self, stage: Stage) -> StageContext:
        g = self.graph
        ins = {lk.dst_port: self.channels[lk.name] for lk in g.links if lk.dst == stage.name}
        outs = {lk.src_port: self.channels[lk.name] for lk in g.links if lk.src == stage.name}
        return StageContext(graph=g.name, stage=stage.name, session_id=self.id, clock=self.clock,
                            media_clock=self.media_clock, metrics=self.metrics, inputs=ins,
                            outputs=outs, emit=self._emit, epoch=lambda: self.epoch)

    async def _run_stage(self, stage: Stage, ctx: StageContext) -> None:
        try:
            await stage.run(ctx)
        except ChannelClosed:
            pass  # our consumer went away (it finished or the session is closing): we are done
        finally:
            for ch in ctx.outputs.values():
                ch.close()
            for ch in ctx.inputs.values():
                ch.close()  # tell our producers nobody reads any more

    async def run(self) -> None:
        """Run to completion. Raises SessionFailed if a stage fails; always cleans up."""
        g, m = self.graph, self.metrics
        m.sessions_active.labels(g.name).inc()
        failed: tuple[str, BaseException] | None = None
        try:
            contexts = {}
            for name, stage in g.stages.items():
                contexts[name] = ctx = self._context(stage)
                try:
                    await stage.setup(ctx)
                except Exception as exc:  # noqa: BLE001 - reported as the session's failure
                    failed = (name, exc)
                    break
                self._started_stages.append(stage)
            if failed is None:
                self.media_clock.start()
                self._tasks = {name: asyncio.create_task(self._run_stage(stage, contexts[name]),
                                                         name=f"{self.id}:{name}")
                               for name, stage in g.stages.items()}
                failed = await self._supervise()
        finally:
            await self._cancel_all()
            await self._teardown()
            m.sessions_active.labels(g.name).dec()
        if failed is not None:
            stage_name, exc = failed
            self.error = SessionFailed(self.id, stage_name, exc)
            m.session_failures.labels(g.name, stage_name).inc()
            log.warning("%s", self.error)
            log.debug("traceback of the failure", exc_info=exc)
            self._emit(StageFailed(session_id=self.id, stage=stage_name, message=str(exc), type=type(exc).__name__))
            raise self.error from exc
        self._emit(Ended(session_id=self.id))

    async def _supervise(self) -> tuple[str, BaseException] | None:
        pending = set(self._tasks.values())
        names = {t: n for n, t in self._tasks.items()}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.cancelled():
                    continue
                exc = t.exception()
                if exc is not None:
                    return names[t], exc
        return None

    async def _cancel_all(self) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for ch in self.channels.values():
            ch.close()

    async def _teardown(self) -> None:
        for stage in reversed(self._started_stages):  # reverse order of construction
            try:
                await stage.teardown()
            except Exception:
                log.exception("teardown of stage %s failed", stage.name)
        self._started_stages.clear()
