"""A contact sheet of the renderer's frames, before and after: one PNG to look at.

    python -m pipelines.evaluation.contact_sheet -o docs/img/contact-sheet.png [--before-rev 5268073]

Sections, top to bottom:
  1. one row per viseme class (rest, AA, OO, EE, FV, PBM, TH) on the default avatar: the mouth,
     enlarged, and the face, each as the renderer at `--before-rev` drew it and as today's does;
  2. head motion and eyes (yaw -12 / +12, pitch +8, roll +6, gaze -1 / +1, blink), before and
     after (gaze did not exist before: left blank);
  3. one row per test portrait (pipelines/evaluation/test_portraits.py): the input, then the
     face in rest, AA, OO, EE, FV, yaw +12 and gaze +1, rendered at 512 px;
  4. the portraits made to be refused, with the error each gets.

"Before" is rendered by that revision's own code: its tree is exported with `git archive` into
a temporary folder and a small script runs there in a subprocess (its parameter vector is
built by name: it had 12 parameters, today more; a setting it lacks is left out there).
Everything is deterministic.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipelines.render import face_mesh as fm

BEFORE_REV = "5268073"  # the renderer before issue 12's work
SIZE = 512
VISEMES: dict[str, dict[str, float]] = {
    "rest": {}, "AA (open)": {"jaw_open": 1.0}, "OO (rounded)": {"jaw_open": 0.35, "lip_round": 1.0},
    "EE (spread)": {"jaw_open": 0.3, "lip_spread": 1.0}, "FV (labiodental)": {"jaw_open": 0.15, "lip_tuck": 1.0},
    "PBM (bilabial)": {"jaw_open": 0.1, "lip_press": 1.0},
    "TH (dental)": {"jaw_open": 0.18, "lip_spread": 0.15, "tongue": 1.0},  # the tongue came after 5268073
}
HEAD: dict[str, dict[str, float]] = {
    "yaw -12": {"head_yaw": -12.0}, "yaw +12": {"head_yaw": 12.0}, "pitch +8": {"head_pitch": 8.0},
    "roll +6": {"head_roll": 6.0}, "gaze -1": {"gaze_x": -1.0}, "gaze +1": {"gaze_x": 1.0},
    "blink": {"blink_r": 1.0, "blink_l": 1.0},
}
PORTRAIT_CELLS: dict[str, dict[str, float]] = {
    "rest": {}, "AA": VISEMES["AA (open)"], "OO": VISEMES["OO (rounded)"], "EE": VISEMES["EE (spread)"],
    "FV": VISEMES["FV (labiodental)"], "yaw +12": HEAD["yaw +12"], "gaze +1": HEAD["gaze +1"],
}
MOUTH_CELL = (264, 176)  # the mouth crop, enlarged to this (w, h)
FACE_CELL = 176  # face crops in the viseme rows (square)
SMALL_CELL = 136  # face crops in the head and portrait rows
LABEL_W = 172
PAD = 4
BG = (255, 255, 255)
INK = (20, 20, 20)
GREY = (110, 110, 110)

Progress = Callable[[str], None]

# Runs inside the exported old tree (cwd and PYTHONPATH), with argv: params.json out.npy
_OLD_SCRIPT = r"""
import json, sys
import numpy as np, torch
from pipelines.motion.params import IDX, N_PARAMS
from pipelines.render.avatar import default_avatar
from pipelines.render.renderer import WarpRenderer
settings = json.load(open(sys.argv[1]))
p = torch.zeros(len(settings), N_PARAMS)
missing = set()
for i, s in enumerate(settings):
    for name, value in s.items():
        if name in IDX:
            p[i, IDX[name]] = value
        else:
            missing.add(name)
avatar = default_avatar(int(sys.argv[3]))
with torch.no_grad():
    frames = WarpRenderer(avatar)(p).numpy()
np.save(sys.argv[2], frames)
print(json.dumps({"n_params": N_PARAMS, "missing": sorted(missing)}))
"""


def _params(settings: list[dict[str, float]]):  # type: ignore[no-untyped-def]
    import torch

    from pipelines.motion.params import IDX, N_PARAMS

    p = torch.zeros(len(settings), N_PARAMS)
    for i, s in enumerate(settings):
        for name, value in s.items():
            p[i, IDX[name]] = value
    return p


def render_today(avatar, settings: list[dict[str, float]]) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    from pipelines.render.renderer import WarpRenderer

    with torch.no_grad():
        return WarpRenderer(avatar)(_params(settings)).numpy()


def render_before(rev: str, settings: list[dict[str, float]], size: int = SIZE) -> tuple[np.ndarray, list[str]]:
    """The default avatar rendered by the renderer at git revision `rev`; (frames, the
    parameter names that revision does not have: those settings are rendered without them)."""
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="contact-sheet-") as tmp:
        tree = os.path.join(tmp, "tree")
        os.mkdir(tree)
        archive = subprocess.run(["git", "archive", rev], capture_output=True, check=True, cwd=root)
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        with open(os.path.join(tmp, "params.json"), "w") as f:
            json.dump(settings, f)
        out = os.path.join(tmp, "frames.npy")
        env = {**os.environ, "PYTHONPATH": tree}
        done = subprocess.run([sys.executable, "-c", _OLD_SCRIPT, os.path.join(tmp, "params.json"), out, str(size)],
                              cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"rendering at {rev} failed:\n{done.stderr[-2000:]}")
        info = json.loads(done.stdout.strip().splitlines()[-1])
        return np.load(out), info["missing"]


# --- crops -------------------------------------------------------------------------------------

def _crop(frame: np.ndarray, box: tuple[float, float, float, float], out: tuple[int, int]) -> Image.Image:
    x0, y0, x1, y1 = box
    return Image.fromarray(frame).resize(out, Image.Resampling.LANCZOS, box=(x0, y0, x1, y1))


def mouth_box(lm: np.ndarray) -> tuple[float, float, float, float]:
    """Around the lips with room for the jaw's drop (AA) and the corners' spread (EE), at the
    cell's aspect."""
    lips = lm[list(fm.LIPS_UPPER_OUTER) + list(fm.LIPS_LOWER_OUTER)]
    (x0, y0), (x1, _) = lips.min(0), lips.max(0)
    w = x1 - x0
    cx = (x0 + x1) / 2
    half_w = 0.85 * w
    top = y0 - 0.3 * w
    h = 2 * half_w * MOUTH_CELL[1] / MOUTH_CELL[0]
    return cx - half_w, top, cx + half_w, top + h


def face_box(lm: np.ndarray, size: int, scale: float = 1.3) -> tuple[float, float, float, float]:
    """A square around the face oval, `scale` face heights (1.3: the hairline and the chin's drop)."""
    oval = lm[list(fm.FACE_OVAL)]
    c = (oval.max(0) + oval.min(0)) / 2
    side = min(scale * float(np.ptp(oval[:, 1])), float(size))
    x0 = float(np.clip(c[0] - side / 2, 0, size - side))
    y0 = float(np.clip(c[1] - 0.46 * side, 0, size - side))
    return x0, y0, x0 + side, y0 + side


def _thumb(image: np.ndarray, side: int) -> Image.Image:
    im = Image.fromarray(image)
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    cell = Image.new("RGB", (side, side), (235, 235, 235))
    cell.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return cell


# --- layout ------------------------------------------------------------------------------------

class Sheet:
    """Rows of labelled cells, stacked; drawn at the end."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.rows: list[Image.Image] = []
        self.font = ImageFont.load_default(size=15)
        self.small = ImageFont.load_default(size=12)
        self.big = ImageFont.load_default(size=20)

    def heading(self, text: str, note: str = "") -> None:
        im = Image.new("RGB", (self.width, 46 if note else 30), BG)
        d = ImageDraw.Draw(im)
        d.text((PAD, 6), text, fill=INK, font=self.big)
        if note:
            d.text((PAD, 29), note, fill=GREY, font=self.small)
        self.rows.append(im)

    def captions(self, x_and_text: list[tuple[int, str]]) -> None:
        im = Image.new("RGB", (self.width, 18), BG)
        d = ImageDraw.Draw(im)
        for x, t in x_and_text:
            d.text((x + 2, 2), t, fill=GREY, font=self.small)
        self.rows.append(im)

    def row(self, label: str, cells: list[Image.Image | None], sub: str = "", gaps: dict[int, int] | None = None) -> None:
        h = max(c.height for c in cells if c is not None)
        im = Image.new("RGB", (self.width, h + PAD), BG)
        d = ImageDraw.Draw(im)
        d.text((PAD, 4), label, fill=INK, font=self.font)
        for i, line in enumerate(_wrap(sub, 27)[:8]):
            d.text((PAD, 24 + 14 * i), line, fill=GREY, font=self.small)
        x = LABEL_W
        for i, c in enumerate(cells):
            x += (gaps or {}).get(i, 0)
            if c is None:
                d.rectangle((x, 0, x + SMALL_CELL - 1, h - 1), fill=(225, 225, 225))
                d.text((x + 8, h // 2 - 8), "n/a", fill=GREY, font=self.small)
                x += SMALL_CELL + PAD
                continue
            im.paste(c, (x, 0))
            x += c.width + PAD
        self.rows.append(im)

    def text_row(self, label: str, image: Image.Image, text: str) -> None:
        im = Image.new("RGB", (self.width, image.height + PAD), BG)
        d = ImageDraw.Draw(im)
        d.text((PAD, 4), label, fill=INK, font=self.font)
        im.paste(image, (LABEL_W, 0))
        for i, line in enumerate(_wrap(text, 110)[:7]):
            d.text((LABEL_W + image.width + 10, 6 + 16 * i), line, fill=INK, font=self.small)
        self.rows.append(im)

    def image(self) -> Image.Image:
        out = Image.new("RGB", (self.width, sum(r.height for r in self.rows)), BG)
        y = 0
        for r in self.rows:
            out.paste(r, (0, y))
            y += r.height
        return out


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


class _Warnings(logging.Handler):
    """Collects what avatar_from_file warns about (and still shows it on stderr)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> _Warnings:
        logging.getLogger("pipelines.render.avatar").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("pipelines.render.avatar").removeHandler(self)


def _short_warning(message: str) -> str:
    """'portrait 'x.png': the face is only 28 px wide ...' -> 'the face is only 28 px wide'"""
    text = message.split(": ", 1)[-1]
    return text.split(" (")[0].split(";")[0].split(": ")[0]


# --- the sheet ---------------------------------------------------------------------------------

def build(before_rev: str | None = BEFORE_REV, progress: Progress | None = None) -> Image.Image:
    say = progress or (lambda _m: None)
    from pipelines.render.avatar import avatar_from_file, default_avatar

    from . import test_portraits as tp

    t0 = time.perf_counter()
    avatar = default_avatar(SIZE)
    lm = avatar.landmarks
    settings = [*VISEMES.values(), *HEAD.values()]
    say(f"today's renderer: {len(settings)} frames of the default avatar")
    after = render_today(avatar, settings)
    before: np.ndarray | None = None
    missing: list[str] = []
    if before_rev:
        say(f"the renderer at {before_rev}: exporting its tree, rendering {len(settings)} frames in a subprocess")
        before, missing = render_before(before_rev, settings)
        say(f"  done ({time.perf_counter() - t0:.1f} s); parameters it does not have: {', '.join(missing) or 'none'}")

    width = LABEL_W + 2 * (MOUTH_CELL[0] + PAD) + 2 * (FACE_CELL + PAD) + 16
    width = max(width, LABEL_W + 8 * (SMALL_CELL + PAD))
    sheet = Sheet(width)
    sheet.heading("Contact sheet: the renderer, before and after",
                  f"before = git revision {before_rev or '(not rendered)'}, after = this working tree; "
                  f"default avatar at {SIZE} px; python -m pipelines.evaluation.contact_sheet")
    mb, fb = mouth_box(lm), face_box(lm, SIZE)
    x = LABEL_W
    caps = []
    for t, w in (("mouth, before", MOUTH_CELL[0]), ("mouth, after", MOUTH_CELL[0]), ("face, before", FACE_CELL),
                 ("face, after", FACE_CELL)):
        caps.append((x + (16 if t.startswith("face, b") else 0), t))
        x += w + PAD + (16 if t.startswith("face, b") else 0)
    sheet.heading("Viseme classes")
    sheet.captions(caps)
    for i, (name, s) in enumerate(VISEMES.items()):
        cells: list[Image.Image | None] = []
        for frames in (before, after):
            cells.append(None if frames is None else _crop(frames[i], mb, MOUTH_CELL))
        for frames in (before, after):
            cells.append(None if frames is None else _crop(frames[i], fb, (FACE_CELL, FACE_CELL)))
        sub = ", ".join(f"{k} {v:g}" for k, v in s.items()) or "all parameters 0"
        absent = [k for k in s if k in missing]
        if absent:
            sub += f" (before: no {', '.join(absent)}; rendered without)"
        sheet.row(name, cells, sub, gaps={2: 16})

    sheet.heading("Head and eyes", "the face crop; gaze did not exist before" if missing else "")
    sheet.captions([(LABEL_W + i * (SMALL_CELL + PAD), n) for i, n in enumerate(HEAD)])
    n_vis = len(VISEMES)
    for label, frames in (("before", before), ("after", after)):
        if frames is None:
            continue
        cells = []
        for j, s in enumerate(HEAD.values()):
            absent = label == "before" and any(k in missing for k in s)
            cells.append(None if absent else _crop(frames[n_vis + j], fb, (SMALL_CELL, SMALL_CELL)))
        sheet.row(label, cells)

    good = tp.portraits()
    sheet.heading("Test portraits (today's renderer)",
                  "made from the one photograph, see pipelines/evaluation/test_portraits.py; the first cell is the "
                  "input, then the face as rendered at 512 px")
    sheet.captions([(LABEL_W + i * (SMALL_CELL + PAD), n) for i, n in enumerate(["input", *PORTRAIT_CELLS])])
    with tempfile.TemporaryDirectory(prefix="contact-sheet-") as tmp:
        for k, (name, p) in enumerate(good.items(), 1):
            t = time.perf_counter()
            path = os.path.join(tmp, f"{name}.png")
            Image.fromarray(p.image).save(path)
            with _Warnings() as warned:
                av = avatar_from_file(path, SIZE, max_pixels=40_000_000)
            frames = render_today(av, list(PORTRAIT_CELLS.values()))
            box = face_box(av.landmarks, SIZE, 1.15)
            cells = [_thumb(p.image, SMALL_CELL)] + [_crop(f, box, (SMALL_CELL, SMALL_CELL)) for f in frames]
            sub = ("synthetic: " if p.synthetic else "") + (p.short or p.description)
            if warned.messages:
                sub += ". WARNED: " + "; ".join(_short_warning(m) for m in warned.messages)
            sheet.row(name, cells, sub)
            say(f"portrait {k}/{len(good)} {name} ({time.perf_counter() - t:.1f} s)")
        sheet.heading("Refused", "portraits the renderer cannot animate well get this one-line error")
        from pipelines.render.portrait_check import PortraitUnusable

        for name, p in tp.bad_portraits().items():
            path = os.path.join(tmp, f"{name}.png")
            Image.fromarray(p.image).save(path)
            try:
                avatar_from_file(path, SIZE, max_pixels=40_000_000)
                msg = "NOT REFUSED"
            except PortraitUnusable as exc:
                msg = str(exc)
            sheet.text_row(name, _thumb(p.image, SMALL_CELL), f"{p.description}.   ->   {msg}")
            say(f"refused {name}: {msg}")
    return sheet.image()


def save(image: Image.Image, path: str) -> int:
    """As a 256-colour PNG (an octree palette, no dithering): about a quarter of the bytes of
    the RGB one, and side by side at 2x no difference shows on these faces."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    return os.path.getsize(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.evaluation.contact_sheet", description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", required=True, help="the PNG to write")
    ap.add_argument("--before-rev", default=BEFORE_REV, help=f"git revision of the 'before' renderer "
                    f"(default {BEFORE_REV}; 'none' to leave it out)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    rev = None if args.before_rev.lower() == "none" else args.before_rev
    image = build(rev, say)
    n = save(image, args.output)
    say(f"wrote {args.output}: {image.width}x{image.height}, {n / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
