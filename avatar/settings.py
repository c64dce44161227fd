"""What a render request may ask for, validated at the edge (pydantic)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_TEXT_CHARS = int(os.environ.get("AVATAR_MAX_TEXT_CHARS", "5000"))
MAX_IMAGE_PIXELS = int(os.environ.get("AVATAR_MAX_IMAGE_PIXELS", str(40_000_000)))


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
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

    @field_validator("size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (H.264 in yuv420p needs even dimensions)")
        return v

    def check_text(self) -> str:
        text = self.text.strip()
        if not text:
            raise ValueError("--text is empty: give the avatar something to say")
        if len(self.text) > self.max_text_chars:
            raise ValueError(f"--text is {len(self.text)} characters, over the limit of {self.max_text_chars} "
                             "(set AVATAR_MAX_TEXT_CHARS to change it)")
        return text
