"""Can this portrait be animated? Checks on a user's portrait once its face has been found.

The renderer animates a frontal face: it warps the photo around the mesh's landmarks, and
it needs the mouth it moves to be a mouth. Two ways a detected face can still be unusable:

* turned to the side (towards a profile): the mesh still returns 478 points, but the far
  half of the face is foreshortened or hidden, and mouth shapes built for a frontal face
  come out lopsided;
* the mouth covered (a hand, a mask, a sticker, a blurred-out block): the mesh guesses lips
  where there are none, and the renderer would open a mouth in the covering.

`check_portrait` measures both, and the face's size and tilt, and returns errors (the
portrait is refused: `avatar_from_file` raises PortraitUnusable) and warnings (logged).

Yaw. MediaPipe's mesh keeps its topology on a turned face, so the nose tip (1) moves along
the eye line relative to the eyes' midpoint: offset = ((nose - mid) . u) / IOD, u the unit
vector from the outer eye corner 33 to 263, IOD their distance. The nose tip sits
NOSE_DEPTH = 0.45 IOD in front of the outer eye corners (the mesh's own 3D points on the
default photograph), so yaw ~ atan(offset / 0.45): the mesh's 3D face of that photo, turned
by 10 / 20 / 30 / 45 deg and projected, gives offsets of 0.087 / 0.168 / 0.259 / 0.432, and
atan(offset / 0.45) reads 10.9 / 20.5 / 29.9 / 43.8 deg. Measured on the test portraits
(pipelines/evaluation/test_portraits.py): every frontal variant reads <= 3.6 deg (the photo
itself 1.1, mirrored 2.9); the strong-yaw stand-ins (the far half of the face squashed to
80 / 60 / 45 / 30 % of its width) read 4 / 16-18 / 27 / 30 deg. Warn from 15 deg,
refuse from 25 deg. (For scale: the renderer's own head_yaw = 12 frames read 5 deg.) A real
profile is usually not found at all (NoFaceFound).

Covered mouth. Measured on the face scaled to IOD = 64 px, so the figures do not depend on
the photo's resolution: (1) lip detail: the mean luminance gradient inside the outer lip
contour (grown by 3 % IOD) over that on the cheeks (the face between the eyes and the chin,
features cut out); lips, their corners and the line between them make it 2.3-3.3 on the
test portraits (grayscale 2.33, closed mouth 3.08; the small face, enlarged from a 18 px
IOD, 1.71), a flat block 0.00 (grey or skin-coloured, in colour or grayscale). (2) lip
colour, only where the skin has colour (median chroma >= 5; a grayscale photo has 0): lips
are redder than skin, a* (CIELAB) of the lips minus that of the cheeks is 6.7-13.9 on the
test portraits (the darker-skin stand-in 6.7, the lighter 10.6), a grey block -7.1, a
skin-coloured one 0.0. Refused: lip detail below 0.5, or below 1.2 with lip colour below 2
as well; warned: either alone. A textured cover of skin colour (a hand) in a colour photo
is only warned about (lip colour alone), and in a grayscale photo not caught at all.

Framing (avatar.framing_box): the face should span FACE_WIDTH_FRACTION of the frame, but the
photo is enlarged at most MAX_UPSCALE times, so a face with few pixels comes out smaller
(warned below 60 % of the intended width: the small-face test portrait, 28 px wide, fills
11 % instead of 31 %); a crop too tight to frame the head makes the face fill the frame
(warned over 150 %: the tight-crop test portrait fills 85 %) and enlarges it past the cap
(warned over 1.25x the cap: it is enlarged 4.8x).
Open mouth: the renderer's rest pose paints the portrait's lips shut over whatever shows
between them; a smile with the teeth showing (inner lips 0.11-0.13 IOD apart on the test
portraits) closes, the opened-mouth test portrait (0.25) keeps a dark, broken-looking
opening at rest: warned from 0.18.
Tilt: in-plane roll over 25 deg is warned (the photo is tilted 3 deg; its rotated test
portraits read -11.7 and 18.2 and animate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color
from skimage.draw import polygon2mask

from . import face_mesh as fm

NOSE_TIP = 1
EYE_OUTER = (33, 263)
NOSE_DEPTH = 0.45  # IOD: the nose tip in front of the outer eye corners (the mesh's 3D points)
YAW_WARN_DEG = 15.0
YAW_REFUSE_DEG = 25.0
ROLL_WARN_DEG = 25.0
MEASURE_IOD = 64.0  # px: the face is resampled to this inter-ocular distance before the mouth measures
LIP_DETAIL_REFUSE = 0.5
LIP_DETAIL_WARN = 1.2
LIP_REDNESS_WARN = 2.0  # a* units
SKIN_CHROMA_MIN = 5.0  # below this the photo is (near) grayscale: lip colour is not judged
MOUTH_OPEN_WARN = 0.18  # IOD between the inner lips (13, 14) of the portrait itself
LIP_INNER = (13, 14)
SIZE_WARN = 0.6  # face width in the frame over the framing's intended width: smaller warns
TIGHT_WARN = 1.5  # ... larger warns (a tight crop leaves no room to frame the head)
UPSCALE_WARN = 1.25  # enlargement over the framing's usual cap that warns


class PortraitUnusable(ValueError):
    """The face was found, but the renderer cannot animate it well; one-line message."""


@dataclass
class PortraitCheck:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _axes(lm: np.ndarray) -> tuple[np.ndarray, float]:
    d = lm[EYE_OUTER[1]] - lm[EYE_OUTER[0]]
    iod = float(np.linalg.norm(d))
    return d / iod, iod


def yaw_degrees(lm: np.ndarray) -> float:
    """Estimated turn of the face, degrees, + when the nose points towards image right."""
    lm = np.asarray(lm, dtype=np.float64)
    u, iod = _axes(lm)
    mid = (lm[EYE_OUTER[0]] + lm[EYE_OUTER[1]]) / 2
    offset = float((lm[NOSE_TIP] - mid) @ u) / iod
    return math.degrees(math.atan(offset / NOSE_DEPTH))


def roll_degrees(lm: np.ndarray) -> float:
    lm = np.asarray(lm, dtype=np.float64)
    d = lm[EYE_OUTER[1]] - lm[EYE_OUTER[0]]
    return math.degrees(math.atan2(d[1], d[0]))


def _poly_mask(shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    return polygon2mask(shape, np.asarray(pts, dtype=np.float64)[:, ::-1])


def _face_crop(image: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The face's bounding box (plus a margin), resampled so the IOD is MEASURE_IOD px."""
    oval = lm[list(fm.FACE_OVAL)]
    lo, hi = oval.min(0), oval.max(0)
    margin = 0.1 * (hi - lo)
    h, w = image.shape[:2]
    x0, y0 = max(int(lo[0] - margin[0]), 0), max(int(lo[1] - margin[1]), 0)
    x1, y1 = min(int(hi[0] + margin[0]) + 1, w), min(int(hi[1] + margin[1]) + 1, h)
    _, iod = _axes(lm)
    s = MEASURE_IOD / iod
    crop = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1, :3]))
    size = (max(round((x1 - x0) * s), 8), max(round((y1 - y0) * s), 8))
    crop = crop.resize(size, Image.Resampling.LANCZOS if s < 1 else Image.Resampling.BICUBIC)
    sx, sy = size[0] / (x1 - x0), size[1] / (y1 - y0)
    return np.asarray(crop), (lm - np.array([x0, y0])) * np.array([sx, sy])


def mouth_measures(image: np.ndarray, landmarks: np.ndarray) -> dict[str, float]:
    """lip_detail, lip_redness (NaN when the skin has no colour) and skin_chroma; see the
    module's docstring."""
    img, lm = _face_crop(image, np.asarray(landmarks, dtype=np.float64))
    shape = img.shape[:2]
    lab = color.rgb2lab(img)
    luma = lab[..., 0]
    grad = np.hypot(ndimage.sobel(luma, 0), ndimage.sobel(luma, 1))
    outer = _poly_mask(shape, lm[list(fm.LIPS_UPPER_OUTER) + list(fm.LIPS_LOWER_OUTER[-2:0:-1])])
    inner = _poly_mask(shape, lm[list(fm.LIPS_UPPER_INNER) + list(fm.LIPS_LOWER_INNER[-2:0:-1])])
    eyes = (_poly_mask(shape, lm[list(fm.EYE_R_UPPER) + list(fm.EYE_R_LOWER[-2:0:-1])])
            | _poly_mask(shape, lm[list(fm.EYE_L_UPPER) + list(fm.EYE_L_LOWER[-2:0:-1])]))
    face = _poly_mask(shape, lm[list(fm.FACE_OVAL)])
    iod = MEASURE_IOD
    mouth = ndimage.binary_dilation(outer, iterations=max(round(0.03 * iod), 1))
    features = ndimage.binary_dilation(outer | eyes, iterations=max(round(0.12 * iod), 1))
    rows = np.arange(shape[0])[:, None]
    skin = face & ~features & (rows > lm[168][1]) & (rows < lm[152][1] - 0.1 * iod)
    out = {"lip_detail": float("nan"), "lip_redness": float("nan"), "skin_chroma": float("nan")}
    if mouth.sum() < 4 or skin.sum() < 16:
        return out
    out["lip_detail"] = float(grad[mouth].mean() / max(grad[skin].mean(), 1e-6))
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    out["skin_chroma"] = float(np.median(chroma[skin]))
    ring = outer & ~inner
    if out["skin_chroma"] >= SKIN_CHROMA_MIN and ring.sum() >= 4:
        out["lip_redness"] = float(np.median(lab[..., 1][ring]) - np.median(lab[..., 1][skin]))
    return out


@dataclass(frozen=True)
class Framing:
    """How the avatar will be framed (see avatar.framing_box)."""

    size: int  # the avatar's side, px
    side: float  # the side of the portrait's square that becomes the frame, portrait px
    face_width_fraction: float  # the face's width in the frame that the framing aims for
    max_upscale: float  # the most the framing enlarges when the photo has the pixels


def check_portrait(image: np.ndarray, landmarks: np.ndarray, *, framing: Framing | None = None) -> PortraitCheck:
    """Errors and warnings for animating `image` with its detected `landmarks` (478, 2);
    with `framing`, the face's size in the framed avatar is judged too."""
    lm = np.asarray(landmarks, dtype=np.float64)
    res = PortraitCheck()
    m = res.measures
    _, iod = _axes(lm)
    m["iod_px"] = iod
    m["yaw_deg"] = yaw = yaw_degrees(lm)
    m["roll_deg"] = roll = roll_degrees(lm)
    side = "right" if yaw > 0 else "left"
    if abs(yaw) >= YAW_REFUSE_DEG:
        res.errors.append(f"the face is turned ~{abs(yaw):.0f} deg to the {side} (at most {YAW_REFUSE_DEG:.0f} deg "
                          "can be animated; use a frontal photo)")
    elif abs(yaw) >= YAW_WARN_DEG:
        res.warnings.append(f"the face is turned ~{abs(yaw):.0f} deg to the {side}; mouth shapes may look "
                            "lopsided (a frontal photo animates best)")
    if abs(roll) >= ROLL_WARN_DEG:
        res.warnings.append(f"the face is tilted {abs(roll):.0f} deg; straightening the photo may help")
    m["mouth_open"] = gap = float(np.linalg.norm(lm[LIP_INNER[1]] - lm[LIP_INNER[0]])) / iod
    if gap >= MOUTH_OPEN_WARN:
        res.warnings.append(f"the mouth is open in the portrait ({gap:.2f} IOD between the lips); the rest pose "
                            "may not close it cleanly (a closed or slightly parted mouth animates best)")
    m.update(mouth_measures(image, lm))
    detail, red = m["lip_detail"], m["lip_redness"]
    colourless = not math.isfinite(red)
    detail_text = f"lip detail {detail:.2f} of the cheeks'"
    red_text = "" if colourless else f", lip redness {red:+.1f} a* over the skin's"
    if not math.isfinite(detail) or detail < LIP_DETAIL_REFUSE or (
            detail < LIP_DETAIL_WARN and not colourless and red < LIP_REDNESS_WARN):
        res.errors.append(f"the mouth looks covered or hidden ({detail_text}{red_text}); "
                          "a portrait with the lips visible is needed")
    else:
        if detail < LIP_DETAIL_WARN:
            res.warnings.append(f"little detail at the mouth ({detail_text}): is it covered or blurred?")
        if not colourless and red < LIP_REDNESS_WARN:
            res.warnings.append(f"the mouth is not redder than the skin ({red:+.1f} a*): is it covered?")
    if framing is not None:
        face_w = float(np.ptp(lm[list(fm.FACE_OVAL)][:, 0]))
        f = framing
        m["face_in_frame"] = shown = face_w / f.side  # the face's width over the frame's
        m["upscale"] = up = f.size / f.side
        if shown < SIZE_WARN * f.face_width_fraction:
            res.warnings.append(f"the face is only {face_w:.0f} px wide in the portrait: at {f.size} px it fills "
                                f"{shown:.0%} of the frame's width instead of {f.face_width_fraction:.0%} (a "
                                "larger or closer photo of the face is better)")
        elif shown > TIGHT_WARN * f.face_width_fraction:
            res.warnings.append(f"the portrait is cropped close to the face: it fills {shown:.0%} of the frame's "
                                f"width instead of {f.face_width_fraction:.0%} (leave room around the head)")
        if up > UPSCALE_WARN * f.max_upscale:
            res.warnings.append(f"the portrait is enlarged {up:.1f}x to {f.size} px and will look soft "
                                "(a larger photo is better)")
    return res
