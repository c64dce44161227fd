"""The header in front of every binary media message (server -> client).

    offset  size  field      type (big-endian)
    0       1     version    u8   = 1
    1       1     stream     u8   1 video, 2 audio (as in `ready`)
    2       2     flags      u16  bit 0 keyframe, bit 1 utterance start, bit 2 discontinuity
    4       8     pts        i64  in the stream's time base (video 1/fps, audio 1/48000)
    12      4     duration   u32  same unit
    16      ...   payload    one H.264 access unit (Annex B) / one Opus packet / s16le PCM

Fixed size and network byte order, so a client in any language reads it with one unpack.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct(">BBHqI")
HEADER_SIZE = HEADER.size  # 16
VERSION = 1
VIDEO, AUDIO = 1, 2
KEYFRAME, START, DISCONTINUITY = 1, 2, 4


@dataclass(frozen=True, slots=True)
class MediaHeader:
    stream: int
    flags: int
    pts: int
    duration: int

    @property
    def keyframe(self) -> bool:
        return bool(self.flags & KEYFRAME)

    @property
    def start(self) -> bool:
        return bool(self.flags & START)

    @property
    def discontinuity(self) -> bool:
        return bool(self.flags & DISCONTINUITY)


def pack(stream: int, flags: int, pts: int, duration: int, payload: bytes) -> bytes:
    return HEADER.pack(VERSION, stream, flags, pts, duration) + payload


def unpack(message: bytes) -> tuple[MediaHeader, bytes]:
    if len(message) < HEADER_SIZE:
        raise ValueError(f"media message of {len(message)} bytes is shorter than its header")
    version, stream, flags, pts, duration = HEADER.unpack_from(message)
    if version != VERSION:
        raise ValueError(f"media header version {version}, expected {VERSION}")
    return MediaHeader(stream, flags, pts, duration), message[HEADER_SIZE:]
