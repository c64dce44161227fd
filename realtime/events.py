"""Typed session events, and the ones the runtime itself reports.

A stage reports what happened (`ctx.report(UtteranceStarted(...))`) as a frozen dataclass
defined next to the code that emits it; the session hands each event to its subscribers —
observers outside the stages (metrics, a call's data channel, a stream's websocket, the
dashboard feed), so all four read one source. Every event still has `kind` and `data` (its
fields as a dict), the shape of the untyped `Event` that one-off reports use.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEvent:
    kind: ClassVar[str] = "event"
    session_id: str = ""

    @property
    def data(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "session_id"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Interrupted(SessionEvent):
    """The session started a new epoch: everything queued before it is stale."""

    kind: ClassVar[str] = "interrupted"
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StageFailed(SessionEvent):
    """A stage raised: the session ends with SessionFailed."""

    kind: ClassVar[str] = "error"
    stage: str
    message: str
    type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ended(SessionEvent):
    kind: ClassVar[str] = "ended"
