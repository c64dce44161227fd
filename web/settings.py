"""Server settings: defaults here, each overridable by an `AVATAR_<NAME>` environment variable
(lists and mappings as JSON, e.g. AVATAR_ALLOWED_ORIGINS='["https://app.example"]')."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENV_PREFIX = "AVATAR_"


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Security
    token: str | None = Field(None, description="if set, clients must send 'Authorization: Bearer <token>' "
                                                 "(or ?token=<token>, for browsers)")
    allowed_origins: list[str] = Field(default_factory=list, description=(
        "browser Origins allowed besides the server's own; ['*'] allows any. Clients that send "
        "no Origin (not browsers) are always allowed"))
    # Limits
    max_connections: int = Field(16, ge=1)
    max_message_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    max_text_chars: int = Field(5000, ge=1)
    max_queued_utterances: int = Field(8, ge=1)
    messages_per_second: float = Field(20.0, gt=0)
    message_burst: int = Field(50, ge=1)
    send_queue_bytes: int = Field(1024 * 1024, ge=64 * 1024, description="close a client (4008) above this")
    video_queue_bytes: int = Field(256 * 1024, ge=16 * 1024, description="drop video above this")
    slow_client_timeout_s: float = Field(10.0, gt=0, description="close a client whose oldest queued "
                                                                   "message waited this long (4008)")
    socket_send_buffer: int = Field(64 * 1024, ge=0, description="SO_SNDBUF per connection (the kernel "
                                                                 "doubles it), 0 = the kernel's (autotuned, MBs)")
    # Media defaults (a client's `config` may change the first four within these limits)
    sizes: list[int] = Field(default_factory=lambda: [256, 384, 512])
    size: int = 256
    fps: int = Field(25, ge=10, le=30)
    audio: str = Field("opus", pattern="^(opus|pcm)$")
    voice: str = "joe"
    avatar: str = "astronaut"
    avatars: dict[str, Path] = Field(default_factory=dict, description="extra avatars: name -> portrait file")
    latency_budget_s: float = Field(0.150, gt=0)
    lookahead_frames: int = Field(2, ge=1, le=10)
    video_crf: int = Field(23, ge=0, le=51)
    keyframe_interval_s: float = Field(5.0, gt=0)
    stats_interval_s: float = Field(1.0, gt=0)
    # Compute
    device: str = Field("cpu", pattern="^(cpu|cuda|auto)$")
    torch_threads: int = Field(1, ge=1)
    preload: bool = Field(True, description="load the default voice and renderer at start")

    @field_validator("size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (H.264 in yuv420p needs even dimensions)")
        return v

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Defaults, then AVATAR_* variables, then `overrides` (the CLI's flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            ann = str(field.annotation)
            values[name] = json.loads(raw) if ann.startswith(("list", "dict")) else raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
