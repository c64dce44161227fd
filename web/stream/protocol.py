"""The `/v1/stream` protocol, message by message (docs/stream-protocol.md is the prose).

Client -> server: JSON text messages, one object each, told apart by `type`.
Server -> client: JSON text events (below) and binary media messages (framing.py).

These models are the specification: the server validates with them, the client library
builds with them, and `/v1/stream/schema` publishes their JSON Schema.
"""
from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ..limits import ID_PATTERN, Seed, Text, UtteranceId, VoiceName

PROTOCOL_VERSION = 1


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (1xxx: RFC 6455; 4xxx: this protocol)."""

    NORMAL = 1000  # the client closed, or `avatar client` finished
    GOING_AWAY = 1001  # the server is shutting down
    UNSUPPORTED_DATA = 1003  # the client sent a binary message
    POLICY_VIOLATION = 1008  # no message within `first_message_timeout_s` of connecting
    MESSAGE_TOO_BIG = 1009  # a message over `max_message_bytes`
    INTERNAL_ERROR = 1011  # the session failed (an `error` event with fatal=true came first)
    TRY_AGAIN_LATER = 1013  # the server is at `max_connections`
    SLOW_CONSUMER = 4008  # the client read too slowly: its send queue overflowed or lagged


class ErrorCode(str, enum.Enum):
    INVALID_JSON = "invalid_json"  # not parseable JSON, or not an object
    UNKNOWN_TYPE = "unknown_type"  # `type` names no message of this version
    INVALID_MESSAGE = "invalid_message"  # missing or malformed fields (`message` says which)
    TEXT_TOO_LONG = "text_too_long"  # over `max_text_chars` (a say, or an append run so far)
    QUEUE_FULL = "queue_full"  # `max_queued_utterances` utterances are already waiting
    RATE_LIMITED = "rate_limited"  # over `messages_per_second` (burst `message_burst`)
    DUPLICATE_ID = "duplicate_id"  # an utterance with this id is still queued or speaking
    ALREADY_STARTED = "already_started"  # `config` after the stream started
    UNAVAILABLE = "unavailable"  # unknown voice or avatar, unsupported size, ...
    SYNTHESIS_FAILED = "synthesis_failed"  # one sentence could not be spoken (skipped)
    BUSY = "busy"  # the speech engine is overloaded: the expected wait is over `speech_max_wait_s`
    SESSION_FAILED = "session_failed"  # fatal: the media session ended (close 1011 follows)


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- client -> server ------------------------------------------------------------------------
class Config(_Msg):
    """Optional, and only as the first message: how to stream. Omitted fields keep the
    server's defaults; the answer is `ready`."""

    type: Literal["config"] = "config"
    size: int | None = Field(None, description="frame width and height in pixels (one of the server's sizes)")
    fps: int | None = Field(None, ge=10, le=30)
    video: Literal["h264"] = "h264"
    audio: Literal["opus", "pcm"] | None = None
    avatar: str | None = Field(None, pattern=ID_PATTERN, description="an avatar the server offers")
    voice: VoiceName | None = Field(None, description="default voice of `say` and `append`")
    seed: Seed | None = Field(None, description="idle motion (blinks, sway), 0 to 2**31-1")


class Say(_Msg):
    """Speak `text` after everything queued before it (an open `append` run is flushed first)."""

    type: Literal["say"] = "say"
    text: Text
    voice: VoiceName | None = None
    id: UtteranceId | None = Field(None, description="chosen by the client, else the server's")


class Append(_Msg):
    """A fragment of an utterance still being written; each sentence is spoken as soon as it is
    complete. A different `id` than the open run's flushes that run and opens a new one."""

    type: Literal["append"] = "append"
    text: Text
    voice: VoiceName | None = None
    id: UtteranceId | None = None


class Flush(_Msg):
    """The open `append` run is complete: speak what is left of it."""

    type: Literal["flush"] = "flush"


class Interrupt(_Msg):
    """Stop speaking now and drop everything queued; the avatar goes back to idle."""

    type: Literal["interrupt"] = "interrupt"


class Keyframe(_Msg):
    """Ask for a video keyframe (e.g. after the client's decoder failed)."""

    type: Literal["keyframe"] = "keyframe"


ClientMessage = Annotated[Config | Say | Append | Flush | Interrupt | Keyframe, Field(discriminator="type")]
CLIENT_MESSAGES: TypeAdapter[Config | Say | Append | Flush | Interrupt | Keyframe] = TypeAdapter(ClientMessage)


# -- server -> client ------------------------------------------------------------------------
class VideoInfo(_Msg):
    stream: int = 1
    codec: Literal["h264"] = "h264"
    codec_string: str = Field(description="RFC 6381 codec string for WebCodecs/MSE, e.g. avc1.42C01F")
    format: Literal["annexb"] = "annexb"
    width: int
    height: int
    fps: int
    time_base: tuple[int, int] = Field(description="pts unit in seconds, as [numerator, denominator]")


class AudioInfo(_Msg):
    stream: int = 2
    codec: Literal["opus", "pcm_s16le"]
    sample_rate: int
    channels: int = 1
    time_base: tuple[int, int]
    preskip: int = Field(0, description="opus: codec delay; the first packet starts this many samples before 0")


class Limits(_Msg):
    max_message_bytes: int
    max_text_chars: int
    max_queued_utterances: int
    messages_per_second: float
    message_burst: int
    send_queue_bytes: int
    slow_client_timeout_s: float
    first_message_timeout_s: float


class Ready(_Msg):
    type: Literal["ready"] = "ready"
    version: int = PROTOCOL_VERSION
    session: str
    avatar: str
    voice: str
    video: VideoInfo
    audio: AudioInfo
    limits: Limits


class Queued(_Msg):
    """A `say`, or the first `append` of a run, was accepted (gives the server-chosen id)."""

    type: Literal["queued"] = "queued"
    id: str
    position: int = Field(description="utterances ahead of this one, the speaking one included")
    expected_wait_s: float | None = Field(None, description=(
        "only when the server's speech engine is busy: estimated seconds before this utterance's "
        "first words are synthesized"))


class Started(_Msg):
    type: Literal["started"] = "started"
    id: str
    media_time: float = Field(description="seconds on the stream's timeline where speech begins")
    text: str = Field(description="the first sentence")


class Word(_Msg):
    type: Literal["word"] = "word"
    id: str
    text: str
    char_start: int = Field(description="offsets into the utterance's text (all its appends joined)")
    char_end: int
    start: float = Field(description="media time, seconds")
    end: float


class Viseme(_Msg):
    type: Literal["viseme"] = "viseme"
    id: str
    viseme: str = Field(description="sil PP FF TH DD kk CH SS nn RR aa E ih oh ou")
    phoneme: str = Field(description="ARPAbet")
    start: float
    end: float


class Done(_Msg):
    """The utterance is over: all its media was sent before this event (unless interrupted)."""

    type: Literal["done"] = "done"
    id: str
    media_time: float = Field(description="where its speech ended, or was cut")
    interrupted: bool = False


class Error(_Msg):
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    id: str | None = None
    fatal: bool = False


class Stats(_Msg):
    type: Literal["stats"] = "stats"
    media_time: float = Field(description="end of the last video frame sent")
    wall_time: float = Field(description="seconds since ready")
    video_frames: int
    keyframes: int
    audio_packets: int
    bytes_sent: int
    video_dropped: int = Field(description="frames the send queue dropped (slow reader)")
    frames_late: int = Field(description="frames the pipeline dropped or delivered late (overload)")
    queue_bytes: int
    queued_utterances: int


ServerEvent = Annotated[Ready | Queued | Started | Word | Viseme | Done | Error | Stats, Field(discriminator="type")]
SERVER_EVENTS: TypeAdapter[Ready | Queued | Started | Word | Viseme | Done | Error | Stats] = TypeAdapter(ServerEvent)


def json_schema() -> dict[str, Any]:
    """What `/v1/stream/schema` serves."""
    return {"version": PROTOCOL_VERSION, "endpoint": "/v1/stream",
            "client_messages": CLIENT_MESSAGES.json_schema(),
            "server_events": SERVER_EVENTS.json_schema(),
            "binary_header": "see docs/stream-protocol.md: 16 bytes, big-endian: u8 version, u8 stream, "
                             "u16 flags, i64 pts, u32 duration",
            "close_codes": {c.name.lower(): int(c) for c in CloseCode}}


def encode_event(event: BaseModel) -> str:
    return event.model_dump_json(exclude_none=True)
