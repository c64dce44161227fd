"""Server settings: defaults here, each overridable by an `AVATAR_<NAME>` environment variable
(lists and mappings as JSON, e.g. AVATAR_ALLOWED_ORIGINS='["https://app.example"]')."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "AVATAR_"


class IceServer(BaseModel):
    """A STUN or TURN server for callers' peer connections (the browser's RTCIceServer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    urls: list[str] = Field(min_length=1, max_length=8)
    username: str | None = Field(None, max_length=256)
    credential: str | None = Field(None, max_length=256)

    @field_validator("urls")
    @classmethod
    def _schemes(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"{url!r}: an ICE server URL starts with stun:, stuns:, turn: or turns:")
        return v


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
    allowed_hosts: list[str] = Field(default_factory=list, description=(
        "Host names answered besides loopback names, IP literals and the bound address "
        "('.example.com' includes subdomains, '*' any): others get 400 (DNS rebinding)"))
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
    first_message_timeout_s: float = Field(10.0, gt=0, description=(
        "close a websocket that sent no message this long after connecting (1008): an idle "
        "connection must not hold one of the max_connections slots"))
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
    # Calls (WebRTC, docs/calls.md)
    max_calls: int = Field(4, ge=1, description="concurrent calls; beyond, POST /v1/calls answers 503")
    retry_after_s: int = Field(5, ge=1)
    max_sdp_bytes: int = Field(64 * 1024, ge=1024)
    call_size: int = Field(512, ge=128, le=1024)
    call_lookahead_ms: int = Field(40, ge=0, le=120, description="audio look-ahead of the lip model (mirror)")
    call_mirror_delay_s: float = Field(0.10, ge=0.0, description=(
        "the avatar mirrors the caller this far behind: look-ahead + 17.5 ms framing + compute + jitter "
        "+ the render margin beyond the latency budget"))
    call_latency_budget_s: float = Field(0.04, gt=0, description="media time -> release to the encoder")
    call_render_margin_s: float = Field(0.04, ge=0, description=(
        "mirroring, a frame is emitted this long before its release (idle, render, sink); beyond "
        "call_latency_budget_s it is emitted before its media time"))
    call_lead_frames: int = Field(3, ge=1, le=5, description=(
        "agent mode: frames are made this many frame periods before their media time (render time "
        "to spare when calls share the CPU; speech starts this much later)"))
    call_frame_grid: bool = Field(True, description=(
        "start every call's media clock on a shared 1/fps grid, so all calls' frames fall due together "
        "and the renderer draws them in one batch (adds up to one frame period at call start)"))
    call_peer_timeout_s: float = Field(20.0, gt=0, description="end a call when nothing (media, RTCP reports, data) has come from the peer this long")
    call_connect_timeout_s: float = Field(10.0, gt=0, description=(
        "end a call whose ICE and DTLS have not connected this long after its answer: the slot "
        "is freed and its pipeline stopped"))
    call_perception: bool = Field(False, description=(
        "perceive the caller's camera and microphone (faces, who speaks, events) and send the "
        "records on the call's data channel and GET /v1/perception (docs/perception.md)"))
    call_perception_fps: float = Field(10.0, gt=0, le=30, description=(
        "frames of the caller's camera perceived per second at most (newer frames replace waiting ones)"))
    perception_process: bool = Field(True, description=(
        "run call perception in a child process of its own (one for all calls): in a thread of "
        "the server it took turns with the calls' media for the interpreter lock (BENCHMARKS.md, "
        "\"Perception in a call\")"))
    barge_in: bool = Field(True, description="agent mode: the caller speaking stops the avatar")
    barge_in_min_speech_ms: int = Field(120, ge=32)
    # Compute
    device: str = Field("cpu", pattern="^(cpu|cuda|auto)$")
    torch_threads: int = Field(1, ge=1)
    render_backend: str = Field("eager", pattern="^(auto|eager|compile|onnxruntime|tensorrt)$", description=(
        "how the renderer runs (engines/backends.py): eager PyTorch; torch.compile; onnxruntime; "
        "torch-tensorrt; or auto, which times every backend available here at start-up and keeps "
        "the fastest. Eager by default: on cpu2 it is the fastest (at 512², batch 4: compile "
        "0.39x, onnxruntime 0.18x; BENCHMARKS.md) and starts in 0.2 s instead of 26-47 s of compiling"))
    engine_cache_dir: str | None = Field(None, description=(
        "where exported and compiled engines and autotune figures are kept between starts "
        "(unset: $AVATAR_CACHE_DIR, else ~/.cache/avatar-engine)"))
    render_workers: int = Field(2, ge=1, le=16, description=(
        "renderer copies per (avatar, size), each on its own thread: calls and streams share them"))
    render_processes: bool | None = Field(None, description=(
        "run each renderer copy in a child process: its Python no longer takes turns with the "
        "event loop for the GIL (engines/subprocess_engine.py; 3 calls at 512²: 1-4 % of frames "
        "late instead of 8-19 %, BENCHMARKS.md). Unset: on CPU yes, on CUDA no (frames travel "
        "through a socket: a batch of 64 at 512² took 88 ms instead of 23 ms)"))
    render_max_batch: int | None = Field(None, ge=1, le=256, description=(
        "frames of different sessions rendered in one call; unset: 8 on CPU, 64 on CUDA, where a "
        "call costs about the same at 1 or 64 frames (launch-bound; BENCHMARKS.md, GPU)"))
    render_max_delay_ms: float = Field(0.0, ge=0, le=20, description=(
        "how long a frame that finds the renderer idle may wait for other sessions' frames to join "
        "its batch (never past its deadline less the measured render time; engines/batcher.py). "
        "0: a frame that finds the renderer idle renders at once, alone"))
    gil_switch_interval_s: float = Field(0.0005, gt=0, description=(
        "how soon a thread waiting for the GIL gets it (Python's default 0.005 starves engine threads)"))
    preload: bool = Field(True, description="load the default voice and renderer at start")
    # Speech admission (the voices every session shares; engines/scheduler.py)
    speech_wait_notice_s: float = Field(0.5, ge=0, description=(
        "a new utterance whose first words would wait longer than this for synthesis is accepted "
        "with the expected wait (`expected_wait_s` in `queued`, the 202 body, the data channel)"))
    speech_max_wait_s: float = Field(10.0, gt=0, description=(
        "beyond this expected wait a new utterance is refused (error `busy`, HTTP 503 + Retry-After)"))
    speech_max_lag_s: float = Field(3.0, gt=0, description=(
        "when the speech already being given is this far behind (synthesis due and not done: gaps), "
        "new utterances are refused (`busy`) until it catches up"))
    # Stopping (SIGTERM, SIGINT) and draining (docs/deploy.md)
    drain_timeout_s: float = Field(0.0, ge=0, description=(
        "on SIGTERM: first drain — /readyz false at once, new calls and streams refused (503, "
        "Retry-After), running ones go on until they end by themselves, at most this long — "
        "then the graceful stop below; 0 (default) stops at once. SIGINT never drains; a second "
        "SIGTERM during a drain stops at once"))
    ice_servers: list[IceServer] = Field(default_factory=list, max_length=8, description=(
        "STUN/TURN servers handed to callers (GET /v1/ice-servers; the call page uses them): a "
        "TURN relay for callers behind NAT or an engine whose address they cannot reach "
        "(docs/deploy.md, \"Calls across NAT\"); JSON list of {urls, username, credential}"))
    public_url: str | None = Field(None, description=(
        "the URL under which this server (this worker) is reachable, e.g. https://pod-3.avatar.example; "
        "set, a call's `Location` is absolute on it, so follow-up signaling reaches the worker "
        "holding the call behind a load balancer"))
    shutdown_grace_s: float = Field(10.0, ge=0, description=(
        "on SIGTERM/SIGINT: streams get 1001, calls an `ended` event and a DTLS close, and the "
        "server waits this long at most for them to finish closing, then exits 0"))

    @field_validator("size")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("must be even (H.264 in yuv420p needs even dimensions)")
        return v

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("http://", "https://")) or "?" in v or "#" in v:
            raise ValueError("must be an http:// or https:// URL without query or fragment")
        return v.rstrip("/")

    @field_validator("call_size")
    @classmethod
    def _even_call(cls, v: int) -> int:
        return cls._even(v)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, config_file: str | Path | None = None,
                 **overrides: Any) -> ServerSettings:
        """Defaults, then a JSON settings file (--config / AVATAR_CONFIG), then AVATAR_* variables,
        then `overrides` (the CLI's flags)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = config_file or env.get(ENV_PREFIX + "CONFIG")
        if path:
            try:
                loaded = json.loads(Path(path).read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"settings file {path}: {exc}") from None
            if not isinstance(loaded, dict):
                raise ValueError(f"settings file {path}: must be a JSON object of settings, "
                                 f"not {type(loaded).__name__}")
            values.update(loaded)
        for name, field in cls.model_fields.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            ann = str(field.annotation)
            if ann.startswith("list") and not raw.lstrip().startswith("["):
                values[name] = [x.strip() for x in raw.split(",") if x.strip()]  # "a.example,b.example"
            elif ann.startswith(("list", "dict")):
                try:
                    values[name] = json.loads(raw)
                except ValueError as exc:
                    raise ValueError(f"{ENV_PREFIX}{name.upper()}: not JSON: {exc}") from None
            else:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:  # one line naming the setting and where it can be set
            parts = []
            for e in exc.errors()[:3]:
                name = ".".join(str(x) for x in e["loc"])
                parts.append(f"setting {name} (AVATAR_{name.upper()}, --config): {e['msg']}")
            raise ValueError("; ".join(parts)) from None
