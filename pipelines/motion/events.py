"""What the live articulator reports about the utterances it plays (pipelines/motion/live.py):
typed session events (realtime/events.py). Media times are on the session's media timeline."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from realtime import SessionEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class UtteranceStarted(SessionEvent):
    kind: ClassVar[str] = "utterance_started"
    utterance_id: str
    epoch: int
    media_time: float  # its first frame
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UtteranceDone(SessionEvent):
    kind: ClassVar[str] = "utterance_done"
    utterance_id: str
    epoch: int
    media_time: float  # the frame after its last


@dataclass(frozen=True, slots=True, kw_only=True)
class UtteranceInterrupted(SessionEvent):
    kind: ClassVar[str] = "utterance_interrupted"
    utterance_id: str
    epoch: int  # the epoch it was spoken in (the session is in a later one now)
    media_time: float  # where it was cut


@dataclass(frozen=True, slots=True, kw_only=True)
class WordSpoken(SessionEvent):
    kind: ClassVar[str] = "word"
    utterance_id: str
    epoch: int
    text: str
    char_start: int
    char_end: int
    start: float
    end: float


@dataclass(frozen=True, slots=True, kw_only=True)
class VisemeTrack(SessionEvent):
    """A sentence's visemes: (viseme, phoneme, start, end) each."""

    kind: ClassVar[str] = "visemes"
    utterance_id: str
    epoch: int
    items: list[tuple[str, str, float, float]]
