"""An avatar: the framed reference portrait and its landmarks, at the output size.

Framing is head-and-shoulders: the face spans about a third of the frame width, its centre
sits at 40 % of the height, and the crop is upscaled by at most 2x where the source allows.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np
from PIL import Image

from .face_mesh import FACE_OVAL, N_POINTS
from .landmarks import detect_face_landmarks
from .portrait import load_portrait
from .portrait_check import Framing, PortraitUnusable, check_portrait

log = logging.getLogger(__name__)

FACE_WIDTH_FRACTION = 0.31  # face width / frame width
FACE_CENTRE_HEIGHT = 0.40  # face centre, as a fraction of the frame height from the top
MAX_UPSCALE = 2.0
DEFAULT_AVATAR = "astronaut"


@dataclass(frozen=True)
class Avatar:
    name: str
    image: np.ndarray  # (S, S, 3) uint8, the framed reference
    landmarks: np.ndarray  # (N_POINTS, 2) float32, pixel coordinates in `image`

    @property
    def size(self) -> int:
        return self.image.shape[0]


def framing_box(shape: tuple[int, ...], landmarks: np.ndarray, size: int) -> tuple[float, float, float]:
    """(x0, y0, side) of the square of the portrait that becomes the avatar's frame."""
    h, w = shape[:2]
    oval = landmarks[list(FACE_OVAL)]
    face_w = float(oval[:, 0].max() - oval[:, 0].min())
    cx = float(oval[:, 0].mean())
    cy = float((oval[:, 1].max() + oval[:, 1].min()) / 2)
    side = face_w / FACE_WIDTH_FRACTION
    side = max(side, size / MAX_UPSCALE)  # never enlarge more than 2x when the source has pixels
    side = min(side, float(min(h, w)))
    x0 = min(max(cx - side / 2, 0.0), w - side)
    y0 = min(max(cy - FACE_CENTRE_HEIGHT * side, 0.0), h - side)
    return x0, y0, side


def frame_portrait(name: str, image: np.ndarray, landmarks: np.ndarray, size: int) -> Avatar:
    x0, y0, side = framing_box(image.shape, landmarks, size)
    box = (x0, y0, x0 + side, y0 + side)
    framed = Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS, box=box)
    scale = size / side
    pts = ((landmarks - np.array([x0, y0], dtype=np.float32)) * scale).astype(np.float32)
    return Avatar(name, np.asarray(framed), pts)


def _default_source() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data  # the photograph ships inside scikit-image's wheel

    image = data.astronaut()
    meta = json.loads(resources.files(__package__).joinpath("assets/astronaut.json").read_text())
    pts = np.asarray(meta["landmarks"], dtype=np.float32)
    assert pts.shape == (N_POINTS, 2)
    return image, pts


def default_avatar(size: int = 512) -> Avatar:
    image, pts = _default_source()
    return frame_portrait(DEFAULT_AVATAR, image, pts, size)


def avatar_from_file(path: str | os.PathLike[str], size: int, *, max_pixels: int) -> Avatar:
    """A user's portrait, framed. Raises PortraitError (the file), NoFaceFound, or
    PortraitUnusable (a face the renderer cannot animate well: turned away, mouth covered;
    see portrait_check); marginal portraits are logged as warnings and animated."""
    image = load_portrait(path, max_pixels=max_pixels)
    pts = detect_face_landmarks(image)
    name = os.path.basename(os.fspath(path))
    check = check_portrait(image, pts, framing=Framing(size, framing_box(image.shape, pts, size)[2],
                                                       FACE_WIDTH_FRACTION, MAX_UPSCALE))
    if check.errors:
        raise PortraitUnusable(f"portrait {name!r} cannot be animated: {'; '.join(check.errors)}")
    for warning in check.warnings:
        log.warning("portrait %r: %s", name, warning)
    return frame_portrait(name, image, pts, size)


def _regenerate_default_asset() -> None:
    """Maintainers only: recompute the stored landmarks of the default avatar."""
    from skimage import data

    import mediapipe

    pts = detect_face_landmarks(data.astronaut())
    out = {"source": "skimage.data.astronaut() (NASA, public domain), 512x512",
           "detector": f"mediapipe {mediapipe.__version__} face_mesh, refine_landmarks=True",
           "landmarks": np.round(pts, 2).tolist()}
    path = os.path.join(os.path.dirname(__file__), "assets", "astronaut.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"wrote {path}")


if __name__ == "__main__":
    _regenerate_default_asset()
