"""Call control messages, the same over HTTP (JSON bodies) and the data channel."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["agent", "mirror"]


class Say(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["say"] = "say"
    text: Annotated[str, Field(min_length=1)]
    voice: str | None = None
    id: str | None = None


class Interrupt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["interrupt"] = "interrupt"


class SetMode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["mode"] = "mode"
    mode: Mode


class Control(BaseModel):
    """What the data channel accepts: one of the messages above, by `type`."""

    msg: Annotated[Say | Interrupt | SetMode, Field(discriminator="type")]
