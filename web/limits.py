"""The input rules at the server's edges, in one place: every field a client can send — HTTP
bodies and query parameters, websocket messages, data-channel messages — has a type, a range
and a length limit, built from the types below. docs/limits.md is the table of them.

Fixed limits live here; the ones an operator may tune (text length, queue lengths, body
sizes) are server settings (web/settings.py) and are checked against those at run time.
Whatever a client sends beyond a limit is refused before anything is kept for it: no lookup
result, no thread, no queue entry.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import Field, StringConstraints

# Ids chosen by clients (utterances): short, printable, safe to echo back in JSON and logs.
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
# Voice names: "joe", or espeak-ng's "lang[-region][+variant]" ("en-us", "en-gb-x-rp+f2";
# one espeak variant has a space: "en-us+mr serious").
VOICE_PATTERN = r"^[A-Za-z0-9_-]{1,40}(\+[A-Za-z0-9_ -]{1,40})?$"
# JSON control bodies (say, mode, interrupt): a 5000-character text in JSON is < 40 KB.
MAX_JSON_BODY_BYTES = 256 * 1024
# GET /v1/calls/{id}?window=N: 20 ms caller-audio chunks; the call keeps the last 4000.
STATS_WINDOW = (1, 4000)
# Idle-motion seeds: what numpy's generators take, within a 32-bit range clients can send.
SEED_RANGE = (0, 2**31 - 1)

UtteranceId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
VoiceName = Annotated[str, StringConstraints(pattern=VOICE_PATTERN)]
# Text: the server's `max_text_chars` (tunable, 5000) is checked by the handler, so the error
# can say "text_too_long"; what one field can make the server parse is bounded by the message
# or body size (`max_message_bytes`, MAX_JSON_BODY_BYTES) before that.
Text = Annotated[str, Field(description="at most the server's max_text_chars characters")]
Seed = Annotated[int, Field(ge=SEED_RANGE[0], le=SEED_RANGE[1])]
StatsWindow = Annotated[int, Field(ge=STATS_WINDOW[0], le=STATS_WINDOW[1])]


def has_words(text: str) -> bool:
    """Something to pronounce: a letter or a digit (punctuation alone says nothing)."""
    return any(ch.isalnum() for ch in text)


class TokenBucket:
    """`rate` messages per second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._t = float(burst), clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
