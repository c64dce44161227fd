"""Issue 12, "a face people believe", measured from output pixels.

Fixed parameter sequences are rendered, MediaPipe's face mesh reads every frame afresh, and
the figures below come from those readings and from image statistics against the reference
portrait. Nothing here reads the renderer's rig or mouth model: the only thing taken from
the renderer is its `roi` (the box outside which it copies the reference, when it has one),
to keep the background figure from being diluted by pixels that cannot change.

    python -m pipelines.evaluation.realism [--image PATH] [--size 512] [--json out.json]

Distances are in inter-ocular distances (IOD, outer eye corners; see face_reading).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.motion.params import IDX, N_PARAMS
from pipelines.render.avatar import Avatar

from . import face_reading as fr
from . import image_stats as st
from .lipsync import pearson

Renderer = Callable[[torch.Tensor], torch.Tensor]  # (B, N_PARAMS) float32 -> (B, S, S, 3) uint8
Progress = Callable[[str], None]

OPEN_JAW = 0.6  # frames at least this open count as open-mouth frames (HF, edges)
VOWEL_JAW = 0.8  # open vowels for the chin: jaw_open 0.8..1
WIDTH_JAW = 0.3  # round vs spread compared at this jaw_open (the "equal opening")
EDGE_LENGTH = 0.25  # an "edge" is at least this many IODs long (see image_stats.sharpest_edge)
MOUTH_GROW = 0.03  # IODs: the mouth region takes in the lip outline's own edge pixels
MOUTH_SEQUENCES = ("jaw", "mixed", "width", "neutral")
HEAD_SEQUENCES = ("yaw", "pitch", "roll")


def _params(n: int, **columns: np.ndarray | float) -> np.ndarray:
    p = np.zeros((n, N_PARAMS), dtype=np.float32)
    for name, col in columns.items():
        p[:, IDX[name]] = col
    return p


def sequences() -> dict[str, np.ndarray]:
    """The fixed parameter sequences, (T, N_PARAMS) each."""
    ramp = np.concatenate([np.linspace(0, 1, 11), np.linspace(0.9, 0, 10)])  # 0 -> 1 -> 0
    phase = np.sin(np.linspace(0, 3 * np.pi, len(ramp)))  # round, then spread, then round
    levels = (0.1, WIDTH_JAW, 0.5)
    width = np.concatenate([_params(2, jaw_open=j, lip_round=np.array([1.0, 0.0]), lip_spread=np.array([0.0, 1.0]))
                            for j in levels])
    return {
        "jaw": _params(len(ramp), jaw_open=ramp),
        "mixed": _params(len(ramp), jaw_open=ramp, lip_round=0.8 * np.clip(phase, 0, None),
                         lip_spread=0.8 * np.clip(-phase, 0, None)),
        "width": width,  # pairs (round, spread) at each level of `levels`
        "yaw": _params(9, head_yaw=np.linspace(-12, 12, 9)),
        "pitch": _params(9, head_pitch=np.linspace(-8, 8, 9)),
        "roll": _params(9, head_roll=np.linspace(-6, 6, 9)),
        "neutral": _params(1),
    }


@dataclass
class Rendered:
    params: np.ndarray  # (T, N_PARAMS)
    frames: np.ndarray  # (T, S, S, 3) uint8
    landmarks: list[np.ndarray | None]  # read by the face mesh, per frame
    # The opening the renderer was told to make: its rig's inner-lip gap at the middle (13-14),
    # in px, or None for a renderer without a rig. jaw_open alone is the command only while
    # nothing else moves the lips: rounding opens them too (its pursed hole).
    commanded_opening: np.ndarray | None = None

    def col(self, name: str) -> np.ndarray:
        return self.params[:, IDX[name]]


@dataclass
class RealismRun:
    reference: np.ndarray  # the avatar's image
    ref_landmarks: np.ndarray  # read by the face mesh on the reference (not the stored ones:
    # the same instrument on both sides, so its bias cancels)
    roi: tuple[int, int, int, int] | None
    renders: dict[str, Rendered]


def render_and_read(avatar: Avatar, renderer_factory: Callable[[Avatar], Renderer] | None = None,
                    progress: Progress | None = None, batch: int = 16) -> RealismRun:
    say = progress or (lambda _msg: None)
    if renderer_factory is None:
        from pipelines.render.renderer import WarpRenderer
        renderer_factory = WarpRenderer
    t = time.perf_counter()
    renderer = renderer_factory(avatar)
    roi = getattr(renderer, "roi", None)
    # a renderer moved to a GPU takes its parameters there
    buffers = list(renderer.buffers()) if isinstance(renderer, torch.nn.Module) else []
    device = buffers[0].device if buffers else torch.device("cpu")
    seqs = sequences()
    frames: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for name, p in seqs.items():
            frames[name] = np.concatenate([renderer(torch.from_numpy(p[i:i + batch]).to(device)).cpu().numpy()
                                           for i in range(0, len(p), batch)])
    n = sum(len(p) for p in seqs.values())
    say(f"rendered {n} frames in {len(seqs)} sequences ({time.perf_counter() - t:.1f} s)")
    t = time.perf_counter()
    with fr.FaceReader() as reader:
        ref_lm = reader.read(avatar.image)
        if ref_lm is None:
            raise ValueError("the face mesh finds no face in the reference portrait")
        renders = {name: Rendered(seqs[name], frames[name], reader.read_all(frames[name]),
                                  _commanded_opening(renderer, seqs[name])) for name in seqs}
    say(f"read {n + 1} frames with the face mesh ({time.perf_counter() - t:.1f} s)")
    return RealismRun(avatar.image, ref_lm, tuple(roi) if roi is not None else None, renders)


def _commanded_opening(renderer: Any, params: np.ndarray) -> np.ndarray | None:
    rig = getattr(renderer, "rig", None)
    if rig is None or not hasattr(rig, "indices"):
        return None
    slot = {int(i): k for k, i in enumerate(rig.indices)}
    with torch.no_grad():
        d = rig(torch.from_numpy(np.asarray(params, np.float32)).to(rig.u.device)).cpu().numpy()
    pos = np.asarray(rig.centres)[None] + d
    return np.linalg.norm(pos[:, slot[14]] - pos[:, slot[13]], axis=-1)


# --- the measures, each on frames / readings only (the tests feed them broken input too) ---

def opening_correlation(readings: list[fr.MouthReading | None], jaw: np.ndarray) -> float:
    """Pearson r of the inner-lip opening read against the commanded jaw_open (found frames)."""
    o = fr.reading_series(readings, "opening")
    ok = ~np.isnan(o)
    return pearson(o[ok], np.asarray(jaw)[ok]) if ok.sum() > 2 else float("nan")


def width_ratio(rounded: fr.MouthReading | None, spread: fr.MouthReading | None) -> float:
    """Mouth width rounded / spread at equal jaw_open: <= 0.8 is 20 % narrower."""
    return rounded.width / spread.width if rounded and spread else float("nan")


def chin_ratios(readings: list[fr.MouthReading | None], neutral: fr.MouthReading) -> np.ndarray:
    """Chin drop / lip opening per frame, both from the neutral render's reading.

    The neutral render (all parameters zero) is the zero of both: its mouth is the rest pose,
    closed, where the reference's lips may be parted, so the reference would not do for the
    opening; and its chin is the reference's (the neutral clause checks that), reported as
    `chin_neutral_vs_reference`."""
    out = []
    for r in readings:
        if r is None:
            out.append(np.nan)
            continue
        opening = r.opening - neutral.opening
        out.append((r.chin - neutral.chin) / opening if opening > 1e-3 else np.nan)
    return np.array(out)


def thickness_ratios(readings: list[fr.MouthReading | None], reference: fr.MouthReading) -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower) lip thickness per frame over the reference's (1.0 = the same)."""
    return (fr.reading_series(readings, "upper_lip") / reference.upper_lip,
            fr.reading_series(readings, "lower_lip") / reference.lower_lip)


def hf_ratios(frames: np.ndarray, landmarks: list[np.ndarray | None], reference: np.ndarray,
              ref_lm: np.ndarray, *, lips_only: bool = False) -> np.ndarray:
    """High-frequency energy of each frame's mouth (inside the outer lip contour: lips and what
    shows between them) over that of the reference's lip region.

    The reference's region is also everything inside its outer lip contour: like for like, as
    the lip-to-interior edges are part of both. For a closed-mouth portrait that is the lips
    alone; for a parted one (the default smiles with teeth) it is the lips and its own teeth.
    `lips_only` compares with the lips alone (outer minus inner contour) instead: stricter
    above, looser below."""
    region = st.lip_ring_mask if lips_only else st.mouth_mask
    ref = st.high_freq_energy(reference, region(reference.shape, ref_lm))
    return np.array([np.nan if lm is None else st.high_freq_energy(f, st.mouth_mask(f.shape, lm)) / ref
                     for f, lm in zip(frames, landmarks, strict=True)])


def edge_ratios(frames: np.ndarray, landmarks: list[np.ndarray | None], reference: np.ndarray,
                ref_lm: np.ndarray) -> np.ndarray:
    """Sharpest edge of each frame's mouth over the reference's sharpest facial edge (inside
    its face oval: eyes, lashes, brows, lips). > 1: an edge sharper than any the photo has."""
    length = max(int(round(EDGE_LENGTH * fr.iod(ref_lm))), 4)
    ref = st.sharpest_edge(reference, st.face_mask(reference.shape, ref_lm), length)
    return np.array([np.nan if lm is None else
                     st.sharpest_edge(f, st.mouth_mask(f.shape, lm, MOUTH_GROW), length) / ref
                     for f, lm in zip(frames, landmarks, strict=True)])


def teeth_clipped(frames: np.ndarray, landmarks: list[np.ndarray | None]) -> np.ndarray:
    """Clipped pixels (a channel >= 254) between the lips as read, per frame (-1: no face)."""
    return np.array([-1 if lm is None else st.clipped_count(f, st.teeth_mask(f.shape, lm))
                     for f, lm in zip(frames, landmarks, strict=True)])


def background_psnrs(frames: np.ndarray, landmarks: list[np.ndarray | None], reference: np.ndarray,
                     ref_lm: np.ndarray, within: tuple[int, int, int, int] | None) -> np.ndarray:
    """PSNR (dB) against the reference outside the head band, where the head was and is."""
    out = []
    for f, lm in zip(frames, landmarks, strict=True):
        faces = [ref_lm] if lm is None else [ref_lm, lm]
        out.append(st.masked_psnr(reference, f, st.background_mask(f.shape, faces, within)))
    return np.array(out)


def neutral_ssim(frame: np.ndarray, reference: np.ndarray, ref_lm: np.ndarray) -> float:
    """SSIM over the box around the head and hair: the whole frame would let the untouched
    background vouch for the face."""
    return st.ssim(reference, frame, st.mask_box(st.head_band_mask(reference.shape, ref_lm, 1.0)))


def _nanmin(x: np.ndarray) -> float:
    """Worst case over the frames that could be measured (NaN: none could)."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmin(x)) if x.size and not np.isnan(x).all() else float("nan")


def _nanmax(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmax(x)) if x.size and not np.isnan(x).all() else float("nan")


def measure(run: RealismRun, progress: Progress | None = None) -> dict[str, float]:
    say = progress or (lambda _msg: None)
    rs = run.renders
    ref, ref_lm = run.reference, run.ref_landmarks
    reading = {name: fr.mouth_readings(r.landmarks) for name, r in rs.items()}
    ref_reading = fr.mouth_reading(ref_lm)
    fig: dict[str, float] = {}

    every = [lm for r in rs.values() for lm in r.landmarks]
    fig["face_found"] = fr.face_found_fraction(every)
    fig["frames"] = float(len(every))
    say(f"face found on {fig['face_found']:.1%} of {len(every)} frames")

    fig["r_jaw"] = opening_correlation(reading["jaw"], rs["jaw"].col("jaw_open"))
    mixed = rs["mixed"].commanded_opening
    fig["r_jaw_mixed"] = opening_correlation(reading["mixed"], rs["mixed"].col("jaw_open") if mixed is None else mixed)
    fig["r_jaw_mixed_vs_jaw_open"] = opening_correlation(reading["mixed"], rs["mixed"].col("jaw_open"))
    say(f"opening vs jaw_open: r = {fig['r_jaw']:.3f}; with round/spread mixed in, vs the commanded "
        f"opening {fig['r_jaw_mixed']:.3f} (vs jaw_open alone {fig['r_jaw_mixed_vs_jaw_open']:.3f})")

    w = reading["width"]
    jaws = rs["width"].col("jaw_open")[::2]
    ratios = [width_ratio(w[2 * i], w[2 * i + 1]) for i in range(len(jaws))]
    for j, q in zip(jaws, ratios, strict=True):
        fig[f"width_ratio_jaw{j:.1f}"] = q
    fig["width_ratio"] = ratios[int(np.argmin(np.abs(jaws - WIDTH_JAW)))]
    say(f"round/spread width at jaw {WIDTH_JAW}: {fig['width_ratio']:.3f}")

    neutral = reading["neutral"][0]
    if neutral is None:
        fig["chin_ratio_min"] = float("nan")
    else:
        vowels = rs["jaw"].col("jaw_open") >= VOWEL_JAW - 1e-6
        fig["chin_ratio_min"] = _nanmin(chin_ratios([x for x, v in zip(reading["jaw"], vowels) if v], neutral))
    fig["chin_neutral_vs_reference"] = (neutral.chin - ref_reading.chin) if neutral else float("nan")
    say(f"chin drop / opening on open vowels: min {fig['chin_ratio_min']:.3f}")

    mouth_readings = [x for name in MOUTH_SEQUENCES for x in reading[name]]
    up, lo = thickness_ratios(mouth_readings, ref_reading)
    fig.update(upper_lip_min=_nanmin(up), upper_lip_max=_nanmax(up), lower_lip_min=_nanmin(lo), lower_lip_max=_nanmax(lo))
    say(f"lip thickness / reference: upper {fig['upper_lip_min']:.2f}..{fig['upper_lip_max']:.2f}, "
        f"lower {fig['lower_lip_min']:.2f}..{fig['lower_lip_max']:.2f}")

    open_frames: list[np.ndarray] = []
    open_lms: list[np.ndarray | None] = []
    all_frames: list[np.ndarray] = []
    all_lms: list[np.ndarray | None] = []
    for name in ("jaw", "mixed"):
        for f, lm, j in zip(rs[name].frames, rs[name].landmarks, rs[name].col("jaw_open"), strict=True):
            if j >= OPEN_JAW - 1e-6:
                open_frames.append(f)
                open_lms.append(lm)
    for name in MOUTH_SEQUENCES:
        all_frames.extend(rs[name].frames)
        all_lms.extend(rs[name].landmarks)
    hf = hf_ratios(np.array(open_frames), open_lms, ref, ref_lm)
    edge = edge_ratios(np.array(open_frames), open_lms, ref, ref_lm)
    hf_lips = hf_ratios(np.array(open_frames), open_lms, ref, ref_lm, lips_only=True)
    fig.update(hf_ratio_min=_nanmin(hf), hf_ratio_max=_nanmax(hf), hf_ratio_vs_lips_min=_nanmin(hf_lips),
               hf_ratio_vs_lips_max=_nanmax(hf_lips), edge_ratio_max=_nanmax(edge), open_frames=float(len(open_frames)))
    say(f"open mouth ({len(open_frames)} frames): HF energy x{fig['hf_ratio_min']:.2f}..x{fig['hf_ratio_max']:.2f}"
        f" of the reference's mouth, sharpest edge x{fig['edge_ratio_max']:.2f} of the face's")

    clipped = teeth_clipped(np.array(all_frames), all_lms)
    fig["teeth_clipped"] = float(clipped[clipped >= 0].sum())
    fig["teeth_max_channel"] = float(max((f[st.teeth_mask(f.shape, lm)].max(initial=0)
                                          for f, lm in zip(all_frames, all_lms, strict=True) if lm is not None),
                                         default=float("nan")))
    # For scale: a photo's own teeth may clip (the default's do); a renderer that reuses them must not.
    fig["reference_teeth_clipped"] = float(st.clipped_count(ref, st.teeth_mask(ref.shape, ref_lm)))
    say(f"teeth: {int(fig['teeth_clipped'])} clipped pixels, brightest channel {fig['teeth_max_channel']:.0f}"
        f" (the reference's own: {int(fig['reference_teeth_clipped'])} clipped)")

    for name in HEAD_SEQUENCES:
        fig[f"bg_psnr_{name}"] = _nanmin(background_psnrs(rs[name].frames, rs[name].landmarks, ref, ref_lm, run.roi))
    # Reading noise: in the head sweeps the mouth is at rest, so its readings should not move.
    still = [x for name in HEAD_SEQUENCES for x in reading[name]] + reading["neutral"]
    for key in ("opening", "width"):
        fig[f"jitter_{key}"] = float(np.nanstd(fr.reading_series(still, key)))
    say(f"reading jitter over the head sweeps (std, IOD): opening {fig['jitter_opening']:.4f}, "
        f"width {fig['jitter_width']:.4f}")
    say("background PSNR (min): " + ", ".join(f"{n} {fig[f'bg_psnr_{n}']:.1f} dB" for n in HEAD_SEQUENCES))

    fig["neutral_ssim"] = neutral_ssim(rs["neutral"].frames[0], ref, ref_lm)
    fig["neutral_ssim_frame"] = st.ssim(ref, rs["neutral"].frames[0])
    say(f"neutral SSIM: head {fig['neutral_ssim']:.4f}, whole frame {fig['neutral_ssim_frame']:.4f}")
    return fig


def realism_report(avatar: Avatar | None = None, *, size: int = 512,
                   renderer_factory: Callable[[Avatar], Renderer] | None = None,
                   progress: Progress | None = None) -> dict[str, float]:
    """All the figures of issue 12 for one avatar (default: the default portrait at `size`)."""
    if avatar is None:
        from pipelines.render.avatar import default_avatar
        avatar = default_avatar(size)
    return measure(render_and_read(avatar, renderer_factory, progress), progress)


# --- the thresholds ---

@dataclass(frozen=True)
class Check:
    clause: str
    keys: tuple[str, ...]
    rule: str
    ok: Callable[[dict[str, float]], bool]


def _ge(key: str, x: float) -> Callable[[dict[str, float]], bool]:
    return lambda f: f[key] >= x  # NaN compares False: an unmeasurable figure fails


def _within(lo_key: str, hi_key: str, lo: float, hi: float) -> Callable[[dict[str, float]], bool]:
    return lambda f: lo <= f[lo_key] and f[hi_key] <= hi


CHECKS: dict[str, Check] = {c.clause: c for c in (
    Check("face_found", ("face_found",), "= 100 %", _ge("face_found", 1.0)),
    Check("opening_tracks_jaw", ("r_jaw", "r_jaw_mixed"), "r >= 0.9 (both)",
          lambda f: f["r_jaw"] >= 0.9 and f["r_jaw_mixed"] >= 0.9),
    Check("round_narrower", ("width_ratio",), "<= 0.80", lambda f: f["width_ratio"] <= 0.8),
    Check("chin_follows", ("chin_ratio_min",), ">= 0.40", _ge("chin_ratio_min", 0.4)),
    Check("lip_thickness", ("upper_lip_min", "upper_lip_max", "lower_lip_min", "lower_lip_max"),
          "0.70..1.30", lambda f: _within("upper_lip_min", "upper_lip_max", 0.7, 1.3)(f)
          and _within("lower_lip_min", "lower_lip_max", 0.7, 1.3)(f)),
    Check("mouth_detail", ("hf_ratio_min", "hf_ratio_max"), "0.5..2", _within("hf_ratio_min", "hf_ratio_max", 0.5, 2.0)),
    Check("mouth_edges", ("edge_ratio_max",), "<= 1", lambda f: f["edge_ratio_max"] <= 1.0),
    Check("teeth_not_clipped", ("teeth_clipped",), "= 0", lambda f: f["teeth_clipped"] == 0),
    Check("background_still", ("bg_psnr_yaw", "bg_psnr_pitch", "bg_psnr_roll"), ">= 30 dB",
          lambda f: min(f["bg_psnr_yaw"], f["bg_psnr_pitch"], f["bg_psnr_roll"]) >= 30),
    Check("neutral_matches", ("neutral_ssim",), ">= 0.95", _ge("neutral_ssim", 0.95)),
)}


def evaluate(figures: dict[str, float]) -> dict[str, bool]:
    return {name: bool(c.ok(figures)) for name, c in CHECKS.items()}


def format_table(figures: dict[str, float]) -> str:
    rows = []
    for name, c in CHECKS.items():
        values = ", ".join(f"{k} {figures[k]:.3g}" for k in c.keys)
        rows.append(f"{'PASS' if c.ok(figures) else 'FAIL'}  {name:<18} {c.rule:<16} {values}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.evaluation.realism", description=__doc__.split("\n")[0])
    ap.add_argument("--image", help="portrait to animate (default: the default avatar)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--json", help="write the figures and verdicts here")
    args = ap.parse_args(argv)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.image:
        from pipelines.render.avatar import avatar_from_file
        avatar = avatar_from_file(args.image, args.size, max_pixels=40_000_000)
    else:
        from pipelines.render.avatar import default_avatar
        avatar = default_avatar(args.size)
    say(f"avatar {avatar.name} at {avatar.size} px")
    figures = realism_report(avatar, progress=say)
    print(format_table(figures))
    if args.json:
        verdicts = evaluate(figures)
        clean = {k: (v if math.isfinite(v) else str(v)) for k, v in figures.items()}  # strict JSON
        with open(args.json, "w") as fh:
            json.dump({"avatar": avatar.name, "size": avatar.size, "figures": clean, "pass": verdicts}, fh, indent=2)
    return 0 if all(evaluate(figures).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
