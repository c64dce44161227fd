"""What a render request may ask for, validated at the edge (pydantic)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_TEXT_CHARS = int(os.environ.get("AVATAR_MAX_TEXT_CHARS", "5000"))
MAX_IMAGE_PIXELS = int(os.environ.get("AVATAR_MAX_IMAGE_PIXELS", str(40_000_000)))
MAX_AUDIO_SECONDS = float(os.environ.get("AVATAR_MAX_AUDIO_SECONDS", "600"))


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    audio: Path | None = None
    output: Path
    image: Path | None = None
    voice: str = "joe"
    rate: float = Field(1.0, ge=0.5, le=2.0)
    pitch: float = Field(1.0, ge=0.5, le=2.0)
    size: int = Field(512, ge=128, le=2048)
    fps: int = Field(25, ge=10, le=60)
    seed: int = 0
    realtime: bool = False
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: int | None = Field(None, ge=1, le=64)
    max_text_chars: int = Field(MAX_TEXT_CHARS, ge=1)
    max_image_pixels: int = Field(MAX_IMAGE_PIXELS, ge=1)
    max_audio_seconds: float = Field(MAX_AUDIO_SECONDS, gt=0)
    lookahead_ms: int = Field(80, ge=0, le=120, description="the lip model's heads: 0, 20, ..., 120 ms")

    @field_validator("size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (H.264 in yuv420p needs even dimensions)")
        return v

    @field_validator("lookahead_ms")
    @classmethod
    def _on_the_step(cls, v: int) -> int:
        if v % 20:
            raise ValueError(f"look-ahead {v} ms not available; choose one of 0, 20, 40, 60, 80, 100, 120")
        return v

    def check_source(self) -> None:
        if (self.text is None) == (self.audio is None):
            raise ValueError("give exactly one of --text or --audio")

    def check_text(self) -> str:
        if self.text is None:
            raise ValueError("--text is missing")
        text = self.text.strip()
        if not text:
            raise ValueError("--text is empty: give the avatar something to say")
        if len(self.text) > self.max_text_chars:
            raise ValueError(f"--text is {len(self.text)} characters, over the limit of {self.max_text_chars} "
                             "(set AVATAR_MAX_TEXT_CHARS to change it)")
        return text
