"""What live synthesis reports about each sentence (pipelines/speech/live.py): typed session
events."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from realtime import SessionEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class Synthesized(SessionEvent):
    kind: ClassVar[str] = "synthesized"
    utterance_id: str
    index: int
    text: str
    timing: Any
    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentFailed(SessionEvent):
    """A sentence could not be (fully) synthesized: it is skipped or cut, the session goes on."""

    kind: ClassVar[str] = "segment_failed"
    utterance_id: str
    index: int
    message: str
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentAbandoned(SessionEvent):
    """The rest of a sentence came too late to be heard: dropped."""

    kind: ClassVar[str] = "segment_abandoned"
    utterance_id: str
    index: int
    epoch: int
    lost_s: float
