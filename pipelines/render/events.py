"""What the render stage reports (pipelines/render/stage.py): typed session events."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from realtime import SessionEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineFailed(SessionEvent):
    """An engine call failed: these frames repeat the last image, the session goes on."""

    kind: ClassVar[str] = "engine_failed"
    stage: str
    frames: int
    message: str
