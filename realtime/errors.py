"""Exceptions of the runtime."""
from __future__ import annotations


class ChannelClosed(Exception):
    """The channel was closed: no more frames will come (get) or be accepted (put)."""


class ChannelFull(Exception):
    """A non-blocking offer found a full channel whose policy forbids dropping."""


class GraphError(ValueError):
    """A graph definition is inconsistent (unknown stage, unconnected port, ...)."""


class SessionFailed(Exception):
    """A stage of the session raised; the session ended, others go on."""

    def __init__(self, session_id: str, stage: str, error: BaseException) -> None:
        super().__init__(f"session {session_id}: stage {stage!r} failed: {error}")
        self.session_id = session_id
        self.stage = stage
        self.error = error
