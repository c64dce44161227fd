"""This engine as a Pipecat video service (pip install pipecat-ai: docs/pipecat.md)."""
try:
    import pipecat  # noqa: F401  (only to say what is missing)
except ImportError as exc:  # reported as missing, never faked
    raise ImportError("the avatar's Pipecat service needs pipecat-ai: pip install 'pipecat-ai==1.14.0' "
                      "(docs/pipecat.md)") from exc

from .service import AvatarVideoService

__all__ = ["AvatarVideoService"]
