"""Test portraits made from the one photograph we have (skimage.data.astronaut()).

Issue 12 asks for "any frontal face": closed-mouth neutral, smiling, teeth showing, tilted,
small in a large photo, tightly cropped, grayscale, dark and light skin. We have one photo:
a smiling woman, upper teeth showing, light skin, 512x512, face ~100 px wide. Every other
case is made from it here, deterministically (no randomness, no detector: the masks come
from the landmarks stored with the default avatar), and each says what was done. Those
marked `synthetic` stand in for a kind of face the photo does not have (darker skin, a
closed or an opened mouth): they test that the pipeline copes with such pixels, not that it
copes with such people; real photographs would be better and we have none.

Three more are made to be refused (see pipelines.render.portrait_check): a strong-yaw face
(the far half of the face squashed) and the mouth hidden behind a flat grey or a flat
skin-coloured block.

    python -m pipelines.evaluation.test_portraits -o DIR   # writes the PNGs, prints what the detector finds
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color, transform
from skimage.draw import polygon2mask

from pipelines.render import face_mesh as fm


@dataclass(frozen=True)
class PortraitVariant:
    name: str
    description: str  # what was done to the photograph, in one line
    image: np.ndarray  # RGB uint8
    synthetic: bool = False  # a stand-in for a kind of face the photo does not have
    expect: str = "ok"  # "ok": animated; "refuse": PortraitUnusable
    short: str = ""  # a few words for labels (the contact sheet)


# --- the photograph and its stored landmarks -------------------------------------------------

@cache
def _source() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    meta = json.loads(resources.files("pipelines.render").joinpath("assets/astronaut.json").read_text())
    pts = np.asarray(meta["landmarks"], dtype=np.float64)
    img = data.astronaut()
    img.setflags(write=False)
    return img, pts


def photo() -> np.ndarray:
    return _source()[0].copy()


def _lm() -> np.ndarray:
    return _source()[1].copy()


def _mask(shape: tuple[int, ...], poly: np.ndarray) -> np.ndarray:
    return polygon2mask(shape[:2], np.asarray(poly, dtype=np.float64)[:, ::-1])


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _outer_lips(lm: np.ndarray) -> np.ndarray:
    return lm[list(fm.LIPS_UPPER_OUTER) + list(fm.LIPS_LOWER_OUTER[-2:0:-1])]


def _inner_lips(lm: np.ndarray) -> np.ndarray:
    return lm[list(fm.LIPS_UPPER_INNER) + list(fm.LIPS_LOWER_INNER[-2:0:-1])]


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[263] - lm[33]))


def _face_centre(lm: np.ndarray) -> np.ndarray:
    oval = lm[list(fm.FACE_OVAL)]
    return (oval.max(0) + oval.min(0)) / 2


# --- geometric variants -----------------------------------------------------------------------

def original() -> PortraitVariant:
    return PortraitVariant("original", "the photograph as it is: smiling, upper teeth showing, 512x512, "
                           "face ~100 px wide", photo(),
                           short="the photo: smiling, upper teeth showing, face 91 px wide")


def mirrored() -> PortraitVariant:
    return PortraitVariant("mirrored", "mirrored left to right", photo()[:, ::-1].copy(), short="mirrored")


def rotated(degrees: float) -> PortraitVariant:
    """In-plane tilt about the face centre; + is counter-clockwise in the image."""
    c = _face_centre(_lm())
    out = transform.rotate(photo(), degrees, center=(c[0], c[1]), mode="symmetric", order=3, preserve_range=True)
    way = "counter-clockwise" if degrees > 0 else "clockwise"
    return PortraitVariant(f"rotated_{'ccw' if degrees > 0 else 'cw'}{abs(degrees):g}",
                           f"rotated {abs(degrees):g} deg {way} about the face centre (corners filled by "
                           "mirroring the edge)", _u8(out),
                           short=f"rotated {abs(degrees):g} deg {way}")


def _blurred_canvas(side: int, sigma: float) -> np.ndarray:
    """The photo blurred by `sigma` px of the enlarged canvas (blurred before enlarging: cheaper)."""
    img = photo().astype(np.float64)
    s = sigma * img.shape[0] / side
    blurred = _u8(ndimage.gaussian_filter(img, (s, s, 0), mode="reflect"))
    return np.asarray(Image.fromarray(blurred).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64)


def small_face(scale: float = 0.3, side: int = 1600, at: tuple[int, int] = (980, 420)) -> PortraitVariant:
    """The photo shrunk and pasted into a large canvas of its own heavily blurred enlargement
    (feathered seam), off centre."""
    img = photo()
    n = round(img.shape[0] * scale)
    small = np.asarray(Image.fromarray(img).resize((n, n), Image.Resampling.LANCZOS), dtype=np.float64)
    canvas = _blurred_canvas(side, 40.0)
    x0, y0 = at
    ramp = max(n // 12, 2)
    yy, xx = np.mgrid[0:n, 0:n]
    edge = np.minimum.reduce([yy, xx, n - 1 - yy, n - 1 - xx])  # distance to the pasted photo's border
    feather = np.clip(edge / ramp, 0, 1)[..., None]
    region = canvas[y0:y0 + n, x0:x0 + n]
    canvas[y0:y0 + n, x0:x0 + n] = feather * small + (1 - feather) * region
    face_px = round(100 * scale)
    return PortraitVariant(f"small_face_{round(scale * 100)}",
                           f"small face in a large photo: the photo scaled to {scale:.0%} and placed in a "
                           f"{side}x{side} canvas of its own blurred background (face ~{face_px} px wide, "
                           f"{face_px / side:.1%} of the width)", _u8(canvas),
                           short=f"photo at {scale:.0%} in a {side}x{side} blurred canvas: face ~{face_px} px wide")


def tight_crop(margin: float = 0.08) -> PortraitVariant:
    """A crop just around the face oval (forehead to chin, cheek to cheek) plus `margin` of
    the face size: no hair, no neck, no shoulders to frame with."""
    lm = _lm()
    oval = lm[list(fm.FACE_OVAL)]
    (x0, y0), (x1, y1) = oval.min(0), oval.max(0)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    box = (int(np.floor(x0 - mx)), int(np.floor(y0 - my)), int(np.ceil(x1 + mx)), int(np.ceil(y1 + my)))
    crop = photo()[box[1]:box[3], box[0]:box[2]].copy()
    return PortraitVariant("tight_crop", f"tight crop around the face oval, {margin:.0%} margin "
                           f"({crop.shape[1]}x{crop.shape[0]} px: no hair top, neck or background)", crop,
                           short=f"{crop.shape[1]}x{crop.shape[0]} crop around the face oval")


# --- colour and tone ---------------------------------------------------------------------------

def grayscale() -> PortraitVariant:
    g = color.rgb2gray(photo()) * 255
    return PortraitVariant("grayscale", "grayscale (luminance in all three channels)",
                           _u8(np.repeat(g[..., None], 3, -1)), short="luminance only")


def _skin_weight(lab: np.ndarray) -> np.ndarray:
    """Soft skin mask: chroma near the face's own skin chroma (a*, b* measured on the cheeks
    and forehead of the stored mesh), within the face and neck (a spatial mask from the
    landmarks), feathered. Eye whites and teeth (grey) and the orange suit (outside the
    spatial mask) are left out; the lips (redder than the skin) are taken in only in part."""
    lm = _lm()
    shape = lab.shape
    face = _mask(shape, lm[list(fm.FACE_OVAL)])
    holes = (_mask(shape, _outer_lips(lm)) | _mask(shape, lm[list(fm.EYE_R_UPPER) + list(fm.EYE_R_LOWER[-2:0:-1])])
             | _mask(shape, lm[list(fm.EYE_L_UPPER) + list(fm.EYE_L_LOWER[-2:0:-1])]))
    sample = face & ~ndimage.binary_dilation(holes, iterations=4)
    ab = lab[..., 1:][sample]
    mu = np.median(ab, 0)
    spread = np.maximum(ab.std(0), 4.0)
    d2 = (((lab[..., 1:] - mu) / (2.0 * spread)) ** 2).sum(-1)
    chroma = np.exp(-0.5 * d2)
    # where skin can be: the face oval grown by 15 % of the face width (ears, forehead edge), and
    # the neck: a band below the jaw down to the collar
    fw = float(np.ptp(lm[list(fm.FACE_OVAL)][:, 0]))
    c = _face_centre(lm)
    grown = (lm[list(fm.FACE_OVAL)] - c) * 1.15 + c
    where = _mask(shape, grown)
    jaw = lm[list(fm.JAW)]
    neck = np.vstack([jaw, [jaw[-1][0], jaw[-1][1] + 0.45 * fw], [jaw[0][0], jaw[0][1] + 0.45 * fw]])
    where |= _mask(shape, neck)
    w = chroma * ndimage.gaussian_filter(where.astype(np.float64), 3.0)
    return ndimage.gaussian_filter(w, 1.0)


def _tone(weight_scale: float, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    lab = color.rgb2lab(photo())
    w = _skin_weight(lab)[..., None] * weight_scale
    out = fn(lab.copy())
    mixed = (1 - w) * lab + w * out
    return _u8(color.lab2rgb(mixed) * 255)


def darker_skin() -> PortraitVariant:
    def dark(lab: np.ndarray) -> np.ndarray:
        # the photo's skin is L* 69, a* 7.5, b* 19 (median); a medium-dark brown is about
        # L* 38, a* 14, b* 19 (sRGB ~ (120, 80, 60)): scale L, add red, b a little up
        lab[..., 0] = lab[..., 0] * 0.55  # highlights and shading kept in proportion
        lab[..., 1] = lab[..., 1] + 6.5
        lab[..., 2] = lab[..., 2] * 1.1
        return lab
    return PortraitVariant("darker_skin", "darker skin: the skin tone-mapped in Lab (L* x0.55, a* +6.5, b* x1.1: "
                           "L* 69 -> 38, "
                           "a brown) through a soft skin mask; a synthetic stand-in, not a person "
                           "with dark skin (hair, eyes and teeth untouched)", _tone(1.0, dark), synthetic=True,
                           short="skin toned in Lab: L* x0.55, a* +6.5 (L* 69 -> 38)")


def lighter_skin() -> PortraitVariant:
    def light(lab: np.ndarray) -> np.ndarray:
        lab[..., 0] = 100 - (100 - lab[..., 0]) * 0.55  # L 70 -> 83
        lab[..., 1:] *= 0.55  # paler, less saturated
        return lab
    return PortraitVariant("lighter_skin", "lighter, washed-out skin: the skin lifted in Lab (L towards white, "
                           "chroma x0.55) through a soft skin mask; a synthetic stand-in", _tone(1.0, light),
                           synthetic=True, short="skin lifted in Lab: towards white, chroma x0.55")


# --- expression -------------------------------------------------------------------------------
#
# Both mouth variants move pixels along image columns only (the face is upright): for each
# column a piecewise-linear backward map (output row -> source row) through knots on the
# lip contours, the jaw line and the neck, so nothing folds over and nothing rings.

def _contour(lm: np.ndarray, idx: tuple[int, ...], xs: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """y of a lip contour (ordered left to right) at columns xs; `fill` outside its x range."""
    p = lm[list(idx)]
    inside = (xs >= p[0, 0]) & (xs <= p[-1, 0])
    return np.where(inside, np.interp(xs, p[:, 0], p[:, 1]), fill)


@dataclass
class _MouthGeometry:
    xs: np.ndarray  # the columns that move (integer x, the jaw's x range)
    corner: np.ndarray  # the line through the outer mouth corners, per column
    upper_outer: np.ndarray
    upper_inner: np.ndarray
    lower_inner: np.ndarray
    lower_outer: np.ndarray
    jaw: np.ndarray  # the jaw line (chin in the middle), per column
    fade: np.ndarray  # 1 in the middle of the face, 0 at the jaw's ends (cos^2)
    face_width: float


def _mouth_geometry(lm: np.ndarray) -> _MouthGeometry:
    jaw = lm[list(fm.JAW)]
    xs = np.arange(int(np.ceil(jaw[:, 0].min())), int(np.floor(jaw[:, 0].max())) + 1).astype(np.float64)
    c0, c1 = lm[61], lm[291]
    corner = c0[1] + (xs - c0[0]) * (c1[1] - c0[1]) / (c1[0] - c0[0])
    uo = _contour(lm, fm.LIPS_UPPER_OUTER, xs, corner)
    lo = _contour(lm, fm.LIPS_LOWER_OUTER, xs, corner)
    ui = _contour(lm, fm.LIPS_UPPER_INNER, xs, corner)
    li = _contour(lm, fm.LIPS_LOWER_INNER, xs, corner)
    ui, li = np.minimum(ui, li), np.maximum(ui, li)
    jy = np.maximum(np.interp(xs, jaw[:, 0], jaw[:, 1]), lo + 2.0)  # towards the ears the jaw rises past the mouth line
    mid, half = (xs[0] + xs[-1]) / 2, (xs[-1] - xs[0]) / 2
    fade = np.cos(0.5 * np.pi * np.clip(np.abs(xs - mid) / half, 0, 1)) ** 2
    return _MouthGeometry(xs, corner, uo, ui, li, lo, jy, fade, float(np.ptp(lm[list(fm.FACE_OVAL)][:, 0])))


def _remap_columns(img: np.ndarray, xs: np.ndarray, knots: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Backward-map each column x in xs: output row y samples source row interp(y, out, src)
    through the knots [(out_y, src_y) per column, top to bottom]; rows outside the first and
    last knot, and all other columns, are left as they are."""
    out = img.astype(np.float64).copy()
    h = img.shape[0]
    outs = np.stack([k[0] for k in knots], 1)  # (X, K)
    srcs = np.stack([k[1] for k in knots], 1)
    y0 = int(np.floor(min(outs.min(), srcs.min()))) - 2
    y1 = int(np.ceil(max(outs.max(), srcs.max()))) + 2
    # identity above the first knot and below the last: every column starts and ends at y0, y1
    ends = np.full((len(xs), 1), 1.0)
    outs = np.hstack([ends * y0, outs, ends * y1])
    srcs = np.hstack([ends * y0, srcs, ends * y1])
    outs = np.maximum.accumulate(outs + 1e-3 * np.arange(outs.shape[1]), axis=1)  # strictly rising
    rows = np.arange(max(y0, 0), min(y1, h), dtype=np.float64)
    src_y = np.stack([np.interp(rows, o, s) for o, s in zip(outs, srcs, strict=True)], 1)  # (R, X)
    src_x = np.broadcast_to(xs[None, :], src_y.shape)
    for c in range(3):
        out[rows.astype(int)[:, None], xs.astype(int)[None, :], c] = ndimage.map_coordinates(
            img[..., c].astype(np.float64), [src_y, src_x], order=3, mode="nearest")
    return out


def _soft_band(shape: tuple[int, ...], xs: np.ndarray, top: np.ndarray, bottom: np.ndarray, blur: float) -> np.ndarray:
    """A mask between two per-column rows, feathered by `blur` px."""
    m = np.zeros(shape[:2])
    yy = np.arange(shape[0], dtype=np.float64)[:, None]
    cols = xs.astype(int)
    m[:, cols] = ((yy >= top[None, :]) & (yy <= bottom[None, :])).astype(np.float64)
    return ndimage.gaussian_filter(m, blur)


def closed_mouth() -> PortraitVariant:
    """The lips brought together over the teeth: the upper lip's inner edge moved down 40 % of
    the gap (the thin upper lip stretched), the lower lip, chin and jaw up 60 % (fading to
    nothing at the jaw's ends and below on the neck), the teeth left between them squeezed
    into the seam, which is then shaded like the dark line between closed lips."""
    lm = _lm()
    img = photo()
    g = _mouth_geometry(lm)
    gap = g.lower_inner - g.upper_inner
    meet = g.upper_inner + 0.4 * gap
    up = 0.6 * float(gap.max()) * g.fade  # how far the chin and jaw come up
    neck = g.jaw + 0.45 * g.face_width
    top = g.upper_outer - 0.5 * (g.upper_inner - g.upper_outer) - 1.0
    knots = [(top, top), (meet - 0.05, g.upper_inner), (meet + 0.05, g.lower_inner),
             (g.lower_outer - 0.6 * gap, g.lower_outer), (g.jaw - up, g.jaw), (neck, neck)]
    out = _remap_columns(img, g.xs, knots)
    # the seam: darker where the lips meet, as deep as the gap was wide
    yy = np.arange(img.shape[0], dtype=np.float64)[:, None]
    depth = np.zeros(img.shape[:2])
    cols = g.xs.astype(int)
    strength = 0.5 * (gap / max(float(gap.max()), 1e-6)) ** 0.5
    depth[:, cols] = strength[None, :] * np.exp(-0.5 * ((yy - meet[None, :]) / 0.9) ** 2)
    depth = ndimage.gaussian_filter(depth, (0.3, 1.0))
    out *= (1 - depth)[..., None]
    return PortraitVariant("closed_mouth", "closed mouth (still smiling): the lips brought together over the teeth "
                           "by a column-wise warp (upper lip stretched down, lower lip, chin and jaw moved up 60 % "
                           "of the gap), the seam shaded; a synthetic stand-in for a closed-mouth portrait",
                           _u8(out), synthetic=True, short="lips warped shut over the teeth (still smiling)")


def opened_mouth(drop_iod: float = 0.22) -> PortraitVariant:
    """The jaw dropped by `drop_iod` IODs: the lower lip, chin and jaw moved down (a column-wise
    warp; the upper lip and teeth stay), the opening painted as a dark mouth cavity with the
    tongue lighter towards the lower lip."""
    lm = _lm()
    img = photo()
    g = _mouth_geometry(lm)
    drop = drop_iod * _iod(lm)
    gap = g.lower_inner - g.upper_inner
    half = 0.5 * (lm[291][0] - lm[61][0])
    across = np.clip(np.abs(g.xs - 0.5 * (lm[291][0] + lm[61][0])) / half, 0, 1)
    lip_drop = drop * np.where(gap > 0.5, (1 - across ** 2) ** 0.5, 0.0)  # closes towards the corners
    jaw_drop = 0.9 * drop * g.fade
    neck = g.jaw + 0.45 * g.face_width
    below = np.maximum(g.lower_inner, g.corner)
    knots = [(below, below), (below + lip_drop, below), (g.lower_outer + lip_drop, g.lower_outer),
             (g.jaw + jaw_drop, g.jaw), (neck + 0.2 * jaw_drop, neck)]
    out = _remap_columns(img, g.xs, knots)
    # the cavity, between the (unmoved) teeth's lower edge and the moved lower lip
    yy = np.arange(img.shape[0], dtype=np.float64)[:, None]
    cols = g.xs.astype(int)
    top, bottom = g.lower_inner - 0.5, g.lower_inner + lip_drop + 0.5
    t = np.clip((yy - top[None, :]) / np.maximum(bottom - top, 1)[None, :], 0, 1)
    dark, tongue = np.array([42.0, 17.0, 14.0]), np.array([150.0, 72.0, 66.0])
    paint = np.zeros(img.shape)
    paint[:, cols] = dark + (tongue - dark) * (t ** 1.8)[..., None]
    # a shadow under the upper teeth' edge, so they do not end in a hard line
    paint[:, cols] *= (1 - 0.4 * np.exp(-((yy - top[None, :]) / 1.5) ** 2))[..., None]
    inner = np.where(lip_drop > 0.5, bottom - 0.8, top - 1.0)  # no band where the lips still meet
    band = _soft_band(img.shape, g.xs, top + 0.8, inner, 0.7)
    out = (1 - band[..., None]) * out + band[..., None] * paint
    return PortraitVariant("opened_mouth", f"opened mouth: the lower lip, chin and jaw moved down {drop_iod:.2f} "
                           "inter-ocular distances by a column-wise warp (upper lip and teeth unmoved), the opening "
                           "painted as a dark cavity with a lighter tongue; a synthetic stand-in", _u8(out),
                           synthetic=True, short=f"jaw warped down {drop_iod:.2f} IOD, the opening painted")

# --- made to be refused ---------------------------------------------------------------------

def occluded_mouth(kind: str = "grey") -> PortraitVariant:
    """A flat block over the mouth, from below the nose to above the chin."""
    lm = _lm()
    img = photo().astype(np.float64)
    lips = _outer_lips(lm)
    (x0, y0), (x1, y1) = lips.min(0), lips.max(0)
    w = x1 - x0
    box = (int(x0 - 0.25 * w), int(y0 - 0.15 * w), int(x1 + 0.25 * w), int(y1 + 0.15 * w))
    if kind == "grey":
        fill = np.array([128.0, 128.0, 128.0])
        what = "a mid-grey block"
    else:  # the cheeks' own mean colour: a skin-coloured plaster
        face = _mask(img.shape, lm[list(fm.FACE_OVAL)])
        cheeks = face & ~ndimage.binary_dilation(_mask(img.shape, lips), iterations=12)
        fill = img[cheeks].mean(0)
        what = "a skin-coloured block (the cheeks' mean colour)"
    img[box[1]:box[3], box[0]:box[2]] = fill
    return PortraitVariant(f"occluded_mouth_{kind}", f"mouth occluded: {what} over the mouth "
                           f"({box[2] - box[0]}x{box[3] - box[1]} px)", _u8(img), expect="refuse",
                           short=f"{what} over the mouth")


def strong_yaw(squash: float = 0.3) -> PortraitVariant:
    """A stand-in for a face turned away: the half of the face on image right (from the nose
    line outwards, hair and background with it) squashed horizontally to `squash` of its width,
    the rest of the row shifted in; what a strong turn does to the far cheek, roughly."""
    lm = _lm()
    img = photo().astype(np.float64)
    h, w = img.shape[:2]
    xn = float(lm[4][0])  # nose tip column
    xs = np.arange(w, dtype=np.float64)
    # output column -> source column: left of the nose unchanged; right of it, compressed
    # until the face's far edge, then the rest of the row follows unscaled
    edge = float(lm[list(fm.FACE_OVAL)][:, 0].max()) + 8
    new_edge = xn + squash * (edge - xn)
    src = np.where(xs <= xn, xs, np.where(xs <= new_edge, xn + (xs - xn) / squash, edge + (xs - new_edge)))
    src = np.clip(src, 0, w - 1)
    yy = np.arange(h, dtype=np.float64)[:, None] * np.ones((1, w))
    out = np.stack([ndimage.map_coordinates(img[..., c], [yy, np.broadcast_to(src, (h, w))], order=1, mode="nearest")
                    for c in range(3)], -1)
    return PortraitVariant(f"strong_yaw_{round(squash * 100)}",
                           f"strong-yaw stand-in: the image-right half of the face squashed to {squash:.0%} of its "
                           "width from the nose line outwards (the far cheek foreshortened as in a turn; the yaw "
                           "check reads it as ~30 deg at 30 %); synthetic", _u8(out), synthetic=True, expect="refuse",
                           short=f"far half of the face squashed to {squash:.0%}")


# --- the sets ----------------------------------------------------------------------------------

def portraits() -> dict[str, PortraitVariant]:
    """The portraits that should animate."""
    made = [original(), mirrored(), rotated(15), rotated(-15), small_face(), tight_crop(), grayscale(),
            darker_skin(), lighter_skin(), closed_mouth(), opened_mouth()]
    return {p.name: p for p in made}


def bad_portraits() -> dict[str, PortraitVariant]:
    """The portraits that should be refused with a clear error."""
    made = [strong_yaw(), occluded_mouth("grey"), occluded_mouth("skin")]
    return {p.name: p for p in made}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.evaluation.test_portraits",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", help="write the portraits here as PNG")
    args = ap.parse_args(argv)
    from pipelines.render.landmarks import NoFaceFound, detect_face_landmarks
    from pipelines.render.portrait_check import check_portrait

    for p in [*portraits().values(), *bad_portraits().values()]:
        if args.out:
            import os
            os.makedirs(args.out, exist_ok=True)
            Image.fromarray(p.image).save(os.path.join(args.out, f"{p.name}.png"))
        t = time.perf_counter()
        try:
            pts = detect_face_landmarks(p.image)
            found = f"478 landmarks, IOD {_iod(pts.astype(np.float64)):.0f} px ({time.perf_counter() - t:.2f} s)"
            check = check_portrait(p.image, pts)
            m = check.measures
            found += (f"; yaw {m['yaw_deg']:+.1f} deg, roll {m['roll_deg']:+.1f}, lip detail {m['lip_detail']:.2f}, "
                      f"lip redness {m['lip_redness']:+.1f}, mouth open {m['mouth_open']:.2f}: "
                      + ("REFUSED" if check.errors else "warned" if check.warnings else "ok"))
        except NoFaceFound as exc:
            found = f"NOT FOUND ({exc})"
        print(f"{p.name:<20} {p.image.shape[1]}x{p.image.shape[0]:<5} {found}\n    {p.description}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
