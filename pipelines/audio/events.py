"""What the voice activity stage reports (pipelines/audio/stages.py): typed session events."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from realtime import SessionEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class VoiceActivity(SessionEvent):
    """Speech started or ended in the input audio, at session time `time`."""

    kind: ClassVar[str] = "vad"
    change: Literal["speech_start", "speech_end"]
    time: float
    probability: float

    @property
    def data(self) -> dict[str, Any]:
        # the wire shape (data channel: {"kind": "vad", "vad": "speech_start", ...}) names the
        # change `kind` inside the data, as listeners of the untyped event read it
        return {"kind": self.change, "time": self.time, "probability": self.probability}
