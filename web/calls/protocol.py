"""Call control messages, the same over HTTP (JSON bodies) and the data channel. Field rules
come from web/limits.py (the server's `max_text_chars` is checked on top, by the call)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..limits import StatsWindow, Text, UtteranceId, VoiceName

Mode = Literal["agent", "mirror"]


class Say(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["say"] = "say"
    text: Annotated[Text, Field(min_length=1, description="what to say (at most the server's max_text_chars)")]
    voice: VoiceName | None = Field(None, description="a voice the server offers; default: the server's")
    id: UtteranceId | None = Field(None, description="chosen by the client, else the server's")


class Interrupt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["interrupt"] = "interrupt"


class SetMode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["mode"] = "mode"
    mode: Mode


class CreateQuery(BaseModel):
    """Query parameters of POST /v1/calls."""

    model_config = ConfigDict(extra="allow")  # ?token= travels here too
    mode: Mode = "agent"


class StatsQuery(BaseModel):
    """Query parameters of GET /v1/calls/{id}."""

    model_config = ConfigDict(extra="allow")
    window: StatsWindow = Field(1500, description="caller audio chunks (20 ms each) the figures cover")


class CallStats(BaseModel):
    """GET /v1/calls/{id}: how the call is going."""

    id: str
    mode: Mode
    state: str = Field(description="the peer connection's state (new, connecting, connected, ...)")
    speaking: bool
    queued_utterances: int = Field(description="utterances queued or speaking (at most max_queued_utterances)")
    av_offset_ms: float = Field(description="how much later video reaches the encoder than audio, vs media time")
    latency_p50_ms: float | None = Field(description="mirror mode: caller audio in -> the frame showing it released")
    latency_p99_ms: float | None
    mic_jitter_p50_ms: float | None
    mic_jitter_p99_ms: float | None
    video_released: int
    audio_released: int
    mic_frames: int
    mirrored_frames: int
    stale_frames: int
    barge_in_reaction_ms: list[int]
    perception: PerceptionStats | None = Field(None, description="call_perception on: the caller's camera perceived")


class PerceptionStats(BaseModel):
    camera_frames: int = Field(description="frames of the caller's camera received")
    perceived_frames: int = Field(description="of those, perceived (the rest were skipped: newest frame only)")
    cpu_s: float = Field(description="CPU seconds the perception engine (its child process) spent on this call")
    error: str | None = None


class Accepted(BaseModel):
    utterance_id: str
    expected_wait_s: float | None = Field(None, description=(
        "only when the speech engine is busy: estimated seconds before its first words are synthesized"))


class Control(BaseModel):
    """What the data channel accepts: one of the messages above, by `type`."""

    msg: Annotated[Say | Interrupt | SetMode, Field(discriminator="type")]
