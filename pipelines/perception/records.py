"""The events file's records: what `avatar perceive --events events.jsonl` writes, one JSON
object a line (docs/perception.md, "Events file").

These models are the specification: the file command writes with them, readers can validate
with them, and docs/perception-events.schema.json is their JSON Schema, generated here
(`python -m pipelines.perception.records > docs/perception-events.schema.json`; a test keeps
the committed file equal to it). The schema is versioned: `SCHEMA_VERSION` changes its major
number when a field is removed or changes meaning, its minor number when one is added.

    header   once, first: the input, the analysis, the perceiver's settings
    faces    one per analysed frame: every face (id, box, speaking, mouth, looking, pose),
             the speaker, the sounding mask (RLE)
    person_appeared, person_left, speaker_started, speaker_stopped, speaker_changed,
    looking_at_camera, looking_away, nod, shake      events, at the media time they began
    end      once, last: frames analysed and the recognizers' call counts

Every record has `t` (media time, seconds, from the input's first timestamp) and `type`.
Boxes and masks are in pixels of the INPUT video, whatever resolution perception ran at.

Masks are run-length encoded the way COCO's uncompressed RLE is: `size` is [height, width],
`counts` the lengths of alternating runs of 0 and 1 over the pixels in column-major order
(down the first column, then the next), starting with a run of 0s (which may be 0 long).
`rle_encode` / `rle_decode` convert; pycocotools' `frPyObjects` reads the same dict.
"""
from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .types import Perception, PerceptionEvent

SCHEMA_VERSION = "1.0"
MASK_THRESHOLD = 0.5  # a pixel belongs to the sounding object when its probability is at least this

Box4 = Annotated[list[float], Field(min_length=4, max_length=4,
                                    description="[x0, y0, x1, y1], pixels of the input video")]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    t: float = Field(description="media time, seconds")


# --- header and end ---------------------------------------------------------------------------

class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    glance: bool = Field(description="glance mode: the expensive recognizers only on salient frames")
    lookahead_s: float = Field(description="audio and frames after a frame that its result waited for")
    masks: bool = Field(description="sounding-object masks computed")
    analysis_max_side: int = Field(description="frames longer than this on a side were downscaled for analysis")
    audio_rate: int = Field(description="the soundtrack was mixed to mono and resampled to this rate, Hz")


class Header(_Record):
    """The first line."""

    type: Literal["header"] = "header"
    schema_version: str = SCHEMA_VERSION
    generator: str = "avatar perceive"
    input: str = Field(description="the input file's name (no folder)")
    width: int = Field(description="input video, pixels")
    height: int
    fps: float = Field(description="the video's average frame rate (frames carry their own times: it may vary)")
    duration: float | None = Field(description="seconds, as the container states it; null if it does not")
    frames: int | None = Field(description="frames the container says it holds; null if it does not say")
    audio: bool = Field(description="the input has a soundtrack (without one, nobody speaks)")
    analysis_width: int = Field(description="the frames perception analysed, pixels (downscaled if larger)")
    analysis_height: int
    settings: Settings


class End(_Record):
    """The last line: the file is complete."""

    type: Literal["end"] = "end"
    frames: int = Field(description="frames analysed (one `faces` record each)")
    detector_calls: int
    mesh_calls: int
    segmenter_calls: int
    wall_s: float = Field(description="seconds the analysis took")


# --- faces --------------------------------------------------------------------------------

class RLE(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    size: list[int] = Field(min_length=2, max_length=2, description="[height, width]")
    counts: list[int] = Field(description="alternating runs of 0 and 1, column-major, starting with 0s")


class Mask(BaseModel):
    """The sounding object on this frame."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    kind: Literal["face", "motion"] = Field(
        description="face: the speaking person's segmentation; motion: patches whose motion follows the sound")
    face: int | None = Field(description="the speaking face's id (kind face), else null")
    score: float = Field(ge=0, le=1, description="mean probability over the mask's pixels")
    box: Box4
    rle: RLE


class Face(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    id: int = Field(description="stable while the face is tracked")
    box: Box4
    speaking: float = Field(ge=0, le=1, description="how sure perception is that this face makes the sound heard")
    mouth: float = Field(description="mouth opening, inner lips' gap over the inter-ocular distance")
    looking: bool | None = Field(description="at the camera; null: not measured")
    yaw: float = Field(description="degrees, positive: the face turns to the image's right")
    pitch: float = Field(description="degrees, positive: looking down")
    fresh: bool = Field(description="landmarks measured on this frame (false: carried from an earlier one)")


class Faces(_Record):
    """One line per analysed frame."""

    type: Literal["faces"] = "faces"
    frame: int = Field(description="frame number in the input, from 0")
    faces: list[Face]
    speaker: int | None = Field(description="id of the face speaking; null: nobody on screen")
    speech: float = Field(ge=0, le=1, description="voice activity of the audio at this instant")
    saliency: float = Field(description="the glance's score for this frame")
    analysed: bool = Field(description="the face mesh ran on this frame (glance mode skips frames)")
    mask: Mask | None = Field(description="the sounding object; null: nothing sounds, or silence")


# --- events -------------------------------------------------------------------------------

class PersonAppeared(_Record):
    type: Literal["person_appeared"] = "person_appeared"
    face: int
    box: Box4


class PersonLeft(_Record):
    type: Literal["person_left"] = "person_left"
    face: int


class SpeakerStarted(_Record):
    type: Literal["speaker_started"] = "speaker_started"
    face: int


class SpeakerStopped(_Record):
    type: Literal["speaker_stopped"] = "speaker_stopped"
    face: int


class SpeakerChanged(_Record):
    type: Literal["speaker_changed"] = "speaker_changed"
    face: int = Field(description="the new speaker")
    previous: int = Field(description="the one who spoke before")


class LookingAtCamera(_Record):
    type: Literal["looking_at_camera"] = "looking_at_camera"
    face: int


class LookingAway(_Record):
    type: Literal["looking_away"] = "looking_away"
    face: int


class Nod(_Record):
    type: Literal["nod"] = "nod"
    face: int
    degrees: float = Field(description="the pitch's range over the gesture")


class Shake(_Record):
    type: Literal["shake"] = "shake"
    face: int
    degrees: float = Field(description="the yaw's range over the gesture")


EVENT_MODELS: dict[str, type[_Record]] = {m.model_fields["type"].default: m for m in (
    PersonAppeared, PersonLeft, SpeakerStarted, SpeakerStopped, SpeakerChanged, LookingAtCamera, LookingAway,
    Nod, Shake)}

RecordType = (Header | Faces | PersonAppeared | PersonLeft | SpeakerStarted | SpeakerStopped | SpeakerChanged
              | LookingAtCamera | LookingAway | Nod | Shake | End)
Record = Annotated[RecordType, Field(discriminator="type")]
RECORD: TypeAdapter[RecordType] = TypeAdapter(Record)


def json_schema() -> dict[str, Any]:
    """docs/perception-events.schema.json: the schema of one line of the events file."""
    schema = RECORD.json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"avatar perceive events file, one line (schema_version {SCHEMA_VERSION})",
            "description": "JSON Lines: a header first, one `faces` record per analysed frame, events at the "
                           "media time they began, an `end` record last. Boxes and masks in pixels of the input "
                           "video; masks as COCO-style uncompressed RLE, column-major (docs/perception.md).",
            "x-schema-version": SCHEMA_VERSION, **schema}


def parse_line(line: str) -> RecordType:
    return RECORD.validate_json(line)


def dump(record: BaseModel) -> str:
    """One line of the events file (no newline). Absent values are written as null."""
    return record.model_dump_json()


# --- RLE ----------------------------------------------------------------------------------

def rle_encode(mask: np.ndarray) -> RLE:
    """COCO-style uncompressed RLE of a boolean (H, W) mask: column-major runs, 0s first."""
    m = np.asarray(mask, bool)
    if m.ndim != 2:
        raise ValueError(f"a mask is (H, W), got {m.shape}")
    flat = m.flatten(order="F")
    if not flat.size:
        return RLE(size=[int(m.shape[0]), int(m.shape[1])], counts=[])
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return RLE(size=[int(m.shape[0]), int(m.shape[1])], counts=[int(c) for c in counts])


def rle_decode(rle: RLE | dict[str, Any]) -> np.ndarray:
    r = rle if isinstance(rle, RLE) else RLE.model_validate(rle)
    h, w = r.size
    if sum(r.counts) != h * w:
        raise ValueError(f"RLE counts sum to {sum(r.counts)}, not {h}x{w}")
    values = np.zeros(len(r.counts), bool)
    values[1::2] = True
    flat = np.repeat(values, r.counts)
    return flat.reshape((h, w), order="F")


def rle_area(rle: RLE) -> int:
    return int(sum(rle.counts[1::2]))


# --- from perception -----------------------------------------------------------------------

def _scale_box(box: Any, sx: float, sy: float, w: float, h: float) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    out = [x0 * sx, y0 * sy, x1 * sx, y1 * sy]
    out = [min(max(out[0], 0.0), w), min(max(out[1], 0.0), h), min(max(out[2], 0.0), w), min(max(out[3], 0.0), h)]
    return [round(v, 1) for v in out]


def _upscale(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask to (h, w)."""
    mh, mw = mask.shape
    if (mh, mw) == (h, w):
        return mask
    rows = np.minimum((np.arange(h) + 0.5) * mh / h, mh - 1).astype(np.intp)
    cols = np.minimum((np.arange(w) + 0.5) * mw / w, mw - 1).astype(np.intp)
    return mask[rows[:, None], cols[None, :]]


def mask_record(prob: np.ndarray, kind: str, face: int | None, size: tuple[int, int]) -> Mask | None:
    """A Perception's mask (analysed frame's pixels, probabilities) as a Mask record in pixels
    of the input video (`size` = (height, width)); None if no pixel reaches MASK_THRESHOLD."""
    prob = np.asarray(prob, np.float32)
    on = prob >= MASK_THRESHOLD
    if not on.any():
        return None
    score = float(np.clip(prob[on].mean(), 0.0, 1.0))
    h, w = size
    big = _upscale(on, h, w)
    ys = np.flatnonzero(big.any(axis=1))
    xs = np.flatnonzero(big.any(axis=0))
    box = [float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1)]
    return Mask(kind=kind if kind in ("face", "motion") else "motion",  # type: ignore[arg-type]
                face=face if kind == "face" else None, score=round(score, 3), box=box, rle=rle_encode(big))


def event_record(ev: PerceptionEvent, sx: float = 1.0, sy: float = 1.0, w: float = float("inf"),
                 h: float = float("inf")) -> _Record:
    """An event as its record; a box in it scaled by (sx, sy) and clipped to (w, h)."""
    model = EVENT_MODELS.get(ev.type)
    if model is None:
        raise ValueError(f"unknown perception event {ev.type!r}")
    fields: dict[str, Any] = {"t": round(float(ev.t), 4), "face": ev.face}
    if ev.type == "person_appeared":
        fields["box"] = _scale_box(ev.data.get("box", (0, 0, 0, 0)), sx, sy, w, h)
    elif ev.type == "speaker_changed":
        fields["previous"] = ev.data.get("from")
    elif ev.type in ("nod", "shake"):
        fields["degrees"] = float(ev.data.get("degrees", 0.0))
    return model(**fields)


def records_of(p: Perception, *, analysed_size: tuple[int, int] | None = None,
               input_size: tuple[int, int] | None = None) -> list[_Record]:
    """A Perception as records: its `faces` record, then its events.

    `analysed_size` and `input_size` are (height, width) of the frame perception ran on and of
    the input video: boxes and the mask are mapped from one to the other (perception of a
    downscaled frame). Without them the analysed frame is the input."""
    if input_size is None:
        if p.mask is not None:
            input_size = (int(p.mask.shape[0]), int(p.mask.shape[1]))
        elif analysed_size is not None:
            input_size = analysed_size
    if analysed_size is None:
        analysed_size = input_size
    if input_size is None or analysed_size is None:  # no size known: boxes as they are
        sx = sy = 1.0
        h = w = float("inf")
    else:
        (ah, aw), (h, w) = analysed_size, input_size
        sx, sy = w / max(aw, 1), h / max(ah, 1)
    faces = [Face(id=f.id, box=_scale_box(f.box, sx, sy, w, h), speaking=float(np.clip(f.speaking, 0.0, 1.0)),
                  mouth=float(f.mouth), looking=f.looking, yaw=float(f.yaw), pitch=float(f.pitch), fresh=f.fresh)
             for f in p.faces]
    mask = None
    if p.mask is not None and input_size is not None:
        mask = mask_record(p.mask, p.mask_kind or "motion", p.speaker, input_size)
    out: list[_Record] = [Faces(t=round(float(p.t), 4), frame=p.index, faces=faces, speaker=p.speaker,
                                speech=float(np.clip(p.speech, 0.0, 1.0)), saliency=float(p.saliency),
                                analysed=bool(p.analysed), mask=mask)]
    out.extend(event_record(e, sx, sy, w, h) for e in p.events)
    return out


if __name__ == "__main__":
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
