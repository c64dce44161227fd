"""What a call itself reports into its session's event stream (web/calls/call.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from realtime import SessionEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class BargeIn(SessionEvent):
    """The caller spoke over the avatar (agent mode) and it was silenced."""

    kind: ClassVar[str] = "barge_in"
    onset: float  # the caller's speech onset, session time
    reaction_s: float  # from that onset to the avatar silenced
