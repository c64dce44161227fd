"""Evaluate perception on the generated test scenes (issue 13, item 8).

    python -m pipelines.evaluation.perception_eval [--seeds 101 201 ...] [--mode full|glance|both | --glance]
                                                   [--out bench/results/perception-eval.json]

Runs `pipelines.perception.perceiver.Perceiver` (full and glance mode) over the scenes of
pipelines/evaluation/perception_scenes.py — a scene's whole audio first, then its frames —
and scores it with pipelines/evaluation/perception_metrics.py. Prints a table per kind and
overall, writes the figures as JSON and a PNG of per-kind bars beside it. Every figure was
measured on generated scenes, and says so; published AVSBench / AVA figures are not these.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import perception_metrics as pm
from . import perception_scenes as ps

SOURCE = (f"measured on generated scenes (pipelines/evaluation/perception_scenes.py, generator "
          f"v{ps.GENERATOR_VERSION}); not AVSBench or AVA data")
DEFAULT_OUT = os.path.join("bench", "results", "perception-eval.json")
EXPENSIVE = ("detector_calls", "mesh_calls", "segmenter_calls")


@dataclass
class Group:
    masks: pm.MaskScores = field(default_factory=pm.MaskScores)
    masks_positive: pm.MaskScores = field(default_factory=pm.MaskScores)  # frames with a sounding object only
    speaker: pm.SpeakerScores = field(default_factory=pm.SpeakerScores)
    counters: dict[str, int] = field(default_factory=lambda: {"frames": 0, **{k: 0 for k in EXPENSIVE}})
    scenes: int = 0
    missing_results: int = 0
    seconds: float = 0.0

    def merge(self, o: Group) -> None:
        self.masks.merge(o.masks)
        self.masks_positive.merge(o.masks_positive)
        self.speaker.merge(o.speaker)
        for k, v in o.counters.items():
            self.counters[k] = self.counters.get(k, 0) + v
        self.scenes += o.scenes
        self.missing_results += o.missing_results
        self.seconds += o.seconds

    def figures(self) -> dict[str, Any]:
        f = max(self.counters.get("frames", 0), 1)
        lat = self.speaker.latencies
        return {
            "measured_on": SOURCE,
            "scenes": self.scenes, "frames": self.counters.get("frames", 0),
            "frames_without_result": self.missing_results,
            "miou": self.masks.miou, "miou_sounding_frames": self.masks_positive.miou,
            "fscore": self.masks.fscore,
            "speaker_accuracy_settled": self.speaker.accuracy, "settled_frames": self.speaker.settled_frames,
            "turn_latency_median_s": self.speaker.latency_median_s,
            "turn_changes": len(lat), "turn_changes_missed": self.speaker.missed_changes,
            "distractor_rejection": self.speaker.distractor_rejection,
            "distractor_frames": self.speaker.distractor_pairs,
            "negative_frames": self.masks.negative_frames,
            "negative_mask_rate": self.masks.negative_mask_rate,
            "negative_fpr_avsbench_robust": self.masks.negative_fpr,
            "recognizer_calls_per_frame": sum(self.counters.get(k, 0) for k in EXPENSIVE) / f,
            **{f"{k}_per_frame": self.counters.get(k, 0) / f for k in EXPENSIVE},
            "ms_per_frame": 1000 * self.seconds / f,
        }


def _mask_for(per: Any, shape: tuple[int, int]) -> np.ndarray | None:
    m = getattr(per, "mask", None) if per is not None else None
    if m is None:
        return None
    m = np.asarray(m, np.float32)
    if m.shape != shape:  # a mask at another resolution: brought to the frame's, bilinear
        from PIL import Image

        m = np.asarray(Image.fromarray(m).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))
    return m


def predicted_talkers(scene: ps.Scene, results: dict[int, Any]) -> np.ndarray:
    """Per frame the ground-truth talker the Perceiver named (-1 nobody, -2 a face that is no talker)."""
    out = np.full(scene.n_frames, pm.NOBODY, np.int64)
    for j in range(scene.n_frames):
        per = results.get(j)
        if per is None or per.speaker is None:
            continue
        box = next((f.box for f in per.faces if f.id == per.speaker), None)
        out[j] = pm.match_talker(box, scene.talker_boxes[j]) if box is not None else pm.UNMATCHED
    return out


def run_perceiver(scene: ps.Scene, glance: bool) -> tuple[dict[int, Any], dict[str, int], float]:
    from pipelines.perception.perceiver import Perceiver

    t0 = time.perf_counter()
    p = Perceiver(fps=float(scene.fps), glance=glance)
    p.push_audio(scene.audio, scene.sample_rate)
    results: dict[int, Any] = {}
    for j, frame in enumerate(scene.frames):
        for r in p.push_frame(frame, j / scene.fps):
            results[r.index] = r
    for r in p.finish():
        results[r.index] = r
    return results, dict(p.counters), time.perf_counter() - t0


def score_scene(scene: ps.Scene, results: dict[int, Any], counters: dict[str, int], seconds: float) -> Group:
    g = Group(scenes=1, seconds=seconds)
    shape = scene.masks.shape[1:]
    for j in range(scene.n_frames):
        per = results.get(j)
        g.missing_results += per is None
        pred = _mask_for(per, shape)
        g.masks.add(pred, scene.masks[j])
        if scene.masks[j].any():
            g.masks_positive.add(pred, scene.masks[j])
    g.speaker.add_scene(scene.speaker, predicted_talkers(scene, results), scene.lip_moving, scene.fps)
    for k in g.counters:
        g.counters[k] = int(counters.get(k, 0))
    return g


def _fmt(x: float, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "inf" if isinstance(x, float) and x == float("inf") else "-"
    return f"{100 * x:5.1f}%" if pct else f"{x:.3f}"


def table(groups: dict[str, dict[str, Any]], mode: str) -> str:
    head = (f"perception, {mode} mode -- {SOURCE}\n"
            f"{'kind':<14}{'scenes':>7}{'frames':>7}{'mIoU':>7}{'mIoU+':>7}{'F':>7}{'spk acc':>9}"
            f"{'turn lat':>9}{'missed':>8}{'distr rej':>10}{'neg mask':>9}{'neg FPR':>9}{'calls/fr':>9}{'ms/fr':>7}")
    lines = [head]
    for name, f in groups.items():
        lines.append(f"{name:<14}{f['scenes']:>7}{f['frames']:>7}{_fmt(f['miou']):>7}{_fmt(f['miou_sounding_frames']):>7}"
                     f"{_fmt(f['fscore']):>7}{_fmt(f['speaker_accuracy_settled'], True):>9}"
                     f"{_fmt(f['turn_latency_median_s']):>9}{f['turn_changes_missed']:>4}/{f['turn_changes']:<3}"
                     f"{_fmt(f['distractor_rejection'], True):>10}{_fmt(f['negative_mask_rate'], True):>9}"
                     f"{_fmt(f['negative_fpr_avsbench_robust'], True):>9}{f['recognizer_calls_per_frame']:>9.2f}"
                     f"{f['ms_per_frame']:>7.0f}")
    lines.append("mIoU: AVSBench rule (empty ground truth scored as background), all frames; mIoU+: frames with a "
                 "sounding object; F: beta^2 0.3, 255 thresholds, frames with a sounding object; spk acc: frames "
                 ">= 1 s after a turn change; turn lat: median s to 3 stable frames (missed/changes); neg mask: "
                 "negative frames with any mask pixel >= 0.5; neg FPR: AVSBench-Robust's pixel share > 0.5.")
    if "static_object" in groups:
        lines.append("static_object: a sounding object that does not move; the training-free (motion x audio) "
                     "method is not expected to find it, and its figures show whether it does.")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("miou", "mIoU"), ("fscore", "F"), ("speaker_accuracy_settled", "speaker acc."),
               ("distractor_rejection", "distractor rej."), ("negative_mask_rate", "neg. mask rate")]
    modes = list(report["modes"])
    fig, axes = plt.subplots(len(modes), 1, figsize=(11, 3.6 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes, strict=True):
        groups = report["modes"][mode]["groups"]
        names = list(groups)
        w = 0.8 / len(metrics)
        for i, (key, label) in enumerate(metrics):
            vals = [groups[n][key] if groups[n][key] is not None and np.isfinite(groups[n][key]) else 0.0 for n in names]
            ax.bar(np.arange(len(names)) + i * w, vals, w, label=label)
        ax.set_xticks(np.arange(len(names)) + 0.4 - w / 2, names)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{mode} mode: {SOURCE}", fontsize=8)
        ax.legend(fontsize=7, ncol=len(metrics))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def evaluate(seeds: list[int] | None, modes: list[str], progress: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    per_mode: dict[str, dict[str, Group]] = {m: {} for m in modes}
    scenes_seen = []
    bar = tqdm(total=None, desc="perceive", unit="frame", disable=not progress, file=sys.stderr)
    for scene in ps.test_set(seeds, progress=progress):
        scenes_seen.append({"kind": scene.kind, "seed": scene.seed, "frames": scene.n_frames})
        for mode in modes:
            results, counters, secs = run_perceiver(scene, glance=mode == "glance")
            g = score_scene(scene, results, counters, secs)
            per_mode[mode].setdefault(scene.kind, Group()).merge(g)
            bar.update(scene.n_frames)
        del scene
    bar.close()
    report: dict[str, Any] = {"measured_on": SOURCE, "scenes": scenes_seen, "modes": {}}
    for mode, groups in per_mode.items():
        overall = Group()
        for g in groups.values():
            overall.merge(g)
        figs = {k: groups[k].figures() for k in ps.KINDS if k in groups}
        figs["overall"] = overall.figures()
        report["modes"][mode] = {"groups": figs}
    if "full" in report["modes"] and "glance" in report["modes"]:
        full, gl = report["modes"]["full"]["groups"]["overall"], report["modes"]["glance"]["groups"]["overall"]
        report["glance_vs_full"] = {
            "measured_on": SOURCE,
            "expensive_calls_ratio": (full["recognizer_calls_per_frame"] / gl["recognizer_calls_per_frame"]
                                      if gl["recognizer_calls_per_frame"] else float("inf")),
            "speaker_accuracy_points_lost": 100 * (full["speaker_accuracy_settled"] - gl["speaker_accuracy_settled"]),
        }
    return report


def _finite(x: Any) -> Any:
    """JSON has no NaN or inf: those become null (a figure with nothing to measure, or a miss)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.evaluation.perception_eval", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", help=f"test-set seeds (default all: {list(ps.TEST_SEEDS)})")
    ap.add_argument("--mode", choices=("full", "glance", "both"), default="both")
    ap.add_argument("--glance", action="store_true", help="glance mode only (same as --mode glance)")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"JSON of the figures (default {DEFAULT_OUT}); a PNG beside it")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    mode = "glance" if args.glance else args.mode
    modes = ["full", "glance"] if mode == "both" else [mode]
    try:
        report = evaluate(args.seeds, modes, progress=not args.no_progress)
    except ValueError as exc:
        print(f"perception eval: {exc}", file=sys.stderr)
        return 2
    for m in modes:
        print(table(report["modes"][m]["groups"], m))
        print()
    if "glance_vs_full" in report:
        c = report["glance_vs_full"]
        print(f"glance vs full ({SOURCE}): {c['expensive_calls_ratio']:.2f}x fewer expensive recognizer calls, "
              f"speaker accuracy full minus glance {c['speaker_accuracy_points_lost']:+.1f} points")
    out = args.out
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(_finite(report), f, indent=1)
    png = plot(report, os.path.splitext(out)[0] + ".png")
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
