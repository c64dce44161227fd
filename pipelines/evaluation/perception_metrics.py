"""Perception metrics against the generated scenes' ground truth (pipelines/evaluation/perception_scenes.py).

Masks, by AVSBench's own rules (OpenNLPLab/AVSBench, avs_scripts/avs_s4/utils/utility.py,
`mask_iou` and `Eval_Fmeasure`), with one difference said here: AVSBench's model outputs
logits and the code takes their sigmoid; a Perceiver's mask is already a probability in 0..1,
so it is used as it is (a `None` mask is all zeros).

- IoU: prediction = mask > 0.5 (strictly). A frame whose ground truth is empty is scored as
  background: intersection = pixels where both are 0, union = all pixels (so predicting
  nothing scores 1, predicting the whole frame 0). mIoU = the mean over frames.
- F-score: beta^2 = 0.3; 255 thresholds torch.linspace(0, 1 - 1e-10, 255) (float32, so the
  last is 1.0), prediction = mask >= threshold; precision = tp / (predicted + 1e-20), recall =
  tp / (ground truth + 1e-20); NaN -> 0; frames with an empty ground truth are left out; the
  per-threshold F is averaged over frames and the maximum over thresholds taken. (AVSBench
  takes that maximum per test batch, i.e. per video of 5 frames, then averages over batches;
  here it is taken once over all the frames of a group, the rule as issue 13 states it.)
- Negatives: frames with an empty ground truth. Two rates: the share of those frames with any
  mask pixel >= 0.5 ("a sounding mask", issue 13's criterion), and AVSBench-Robust's FPR
  (jiali-home/AVSBench-Robust, scripts/s4/test.py `calculate_FPR`): the share of pixels > 0.5,
  averaged over negative frames.

Speaker, per frame: the prediction is mapped to a ground-truth talker by its face box (the
talker whose true box has the highest IoU >= 0.3 with the predicted speaker's box), or -1
when the Perceiver says nobody (or its face matches no talker: -2, always wrong).
- speaker accuracy: frames at least 1 s after a change of the true speaker state (the scene's
  start counts as a change);
- turn-change latency: from a true change (not the start) to the first frame from which the
  prediction equals the new state for 3 frames (or until the next change, if sooner); a
  change never detected before the next is a miss (latency inf, counted apart);
- distractor rejection: over (frame, talker) pairs where the talker's lips move but it is not
  the one heard, the share where it is not predicted as the speaker.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

BETA2 = 0.3
N_THRESHOLDS = 255
THRESHOLDS = np.linspace(0, 1 - 1e-10, N_THRESHOLDS).astype(np.float32)  # as torch.linspace in float32
BOX_IOU_MATCH = 0.3
SETTLE_S = 1.0
STAY_FRAMES = 3
NOBODY, UNMATCHED = -1, -2


# --- masks ---------------------------------------------------------------------------------------

def _pred(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.zeros(shape, np.float32)
    m = np.asarray(mask, np.float32)
    if m.shape != shape:
        raise ValueError(f"predicted mask {m.shape} and ground truth {shape} differ in size")
    return m


def frame_iou(pred: np.ndarray | None, gt: np.ndarray, eps: float = 1e-7) -> float:
    """AVSBench's IoU of one frame (empty ground truth: the background's IoU)."""
    g = np.asarray(gt, bool)
    p = _pred(pred, g.shape) > 0.5
    if not g.any():
        return float((~p).sum() / (g.size + eps))
    return float((p & g).sum() / ((p | g).sum() + eps))


def frame_f_curve(pred: np.ndarray | None, gt: np.ndarray) -> np.ndarray | None:
    """F (beta^2 0.3) at each of the 255 thresholds for one frame; None for an empty ground truth."""
    g = np.asarray(gt, bool)
    if not g.any():
        return None
    p = _pred(pred, g.shape).ravel()
    # pred >= THRESHOLDS[i]  <=>  i < k, with k = how many thresholds are <= pred
    k = np.searchsorted(THRESHOLDS, p, side="right")
    pos = np.cumsum(np.bincount(k, minlength=N_THRESHOLDS + 1)[::-1])[::-1][1:]  # pixels with k > i
    tp = np.cumsum(np.bincount(k[g.ravel()], minlength=N_THRESHOLDS + 1)[::-1])[::-1][1:]
    prec = tp / (pos + 1e-20)
    rec = tp / (g.sum() + 1e-20)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (1 + BETA2) * prec * rec / (BETA2 * prec + rec)
    return np.nan_to_num(f, nan=0.0)


@dataclass
class MaskScores:
    """Accumulates frames; holds no masks."""

    ious: list[float] = field(default_factory=list)
    f_sum: np.ndarray = field(default_factory=lambda: np.zeros(N_THRESHOLDS))
    f_frames: int = 0
    negative_frames: int = 0
    negative_with_mask: int = 0
    negative_pixel_share: float = 0.0  # sum over negative frames of the share of pixels > 0.5

    def add(self, pred: np.ndarray | None, gt: np.ndarray) -> None:
        self.ious.append(frame_iou(pred, gt))
        curve = frame_f_curve(pred, gt)
        if curve is not None:
            self.f_sum += curve
            self.f_frames += 1
        else:
            self.negative_frames += 1
            if pred is not None:
                p = np.asarray(pred)
                self.negative_with_mask += bool((p >= 0.5).any())
                self.negative_pixel_share += float((p > 0.5).mean())

    def merge(self, other: MaskScores) -> None:
        self.ious += other.ious
        self.f_sum += other.f_sum
        self.f_frames += other.f_frames
        self.negative_frames += other.negative_frames
        self.negative_with_mask += other.negative_with_mask
        self.negative_pixel_share += other.negative_pixel_share

    @property
    def miou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else float("nan")

    @property
    def fscore(self) -> float:
        return float((self.f_sum / self.f_frames).max()) if self.f_frames else float("nan")

    @property
    def negative_mask_rate(self) -> float:
        return self.negative_with_mask / self.negative_frames if self.negative_frames else float("nan")

    @property
    def negative_fpr(self) -> float:
        return self.negative_pixel_share / self.negative_frames if self.negative_frames else float("nan")


def miou(preds: Sequence[np.ndarray | None], gts: Sequence[np.ndarray]) -> float:
    s = MaskScores()
    for p, g in zip(preds, gts, strict=True):
        s.add(p, g)
    return s.miou


def fscore(preds: Sequence[np.ndarray | None], gts: Sequence[np.ndarray]) -> float:
    s = MaskScores()
    for p, g in zip(preds, gts, strict=True):
        s.add(p, g)
    return s.fscore


# --- speaker -------------------------------------------------------------------------------------

def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_talker(box: Sequence[float] | None, true_boxes: np.ndarray) -> int:
    """The ground-truth talker a predicted face is (-1: no face given; -2: matches none)."""
    if box is None:
        return NOBODY
    ious = [box_iou(box, tb) for tb in true_boxes]
    if not ious or max(ious) < BOX_IOU_MATCH:
        return UNMATCHED
    return int(np.argmax(ious))


def change_points(truth: np.ndarray) -> np.ndarray:
    """Frames where the true speaker state changes (frame 0 included)."""
    t = np.asarray(truth)
    return np.concatenate([[0], np.flatnonzero(t[1:] != t[:-1]) + 1]) if len(t) else np.zeros(0, int)


def settled(truth: np.ndarray, fps: float, settle_s: float = SETTLE_S) -> np.ndarray:
    """Frames at least `settle_s` after the last change of the true state."""
    t = np.asarray(truth)
    cps = change_points(t)
    last = cps[np.searchsorted(cps, np.arange(len(t)), side="right") - 1]
    return (np.arange(len(t)) - last) >= round(settle_s * fps)


def turn_latencies(truth: np.ndarray, pred: np.ndarray, fps: float, stay: int = STAY_FRAMES) -> list[float]:
    """Seconds from each true change (the start excluded) to when the prediction takes the new
    state and keeps it `stay` frames (or to the next change); inf when it never does."""
    t, p = np.asarray(truth), np.asarray(pred)
    cps = list(change_points(t)[1:]) + [len(t)]
    out = []
    for c, nxt in zip(cps[:-1], cps[1:], strict=True):
        found = float("inf")
        for j in range(c, nxt):
            end = min(j + stay, nxt)
            if np.all(p[j:end] == t[c]) and (end - j == stay or end == nxt):
                found = (j - c) / fps
                break
        out.append(found)
    return out


@dataclass
class SpeakerScores:
    settled_frames: int = 0
    settled_correct: int = 0
    latencies: list[float] = field(default_factory=list)
    distractor_pairs: int = 0
    distractor_rejected: int = 0

    def add_scene(self, truth: np.ndarray, pred: np.ndarray, lip_moving: np.ndarray, fps: float) -> None:
        """truth, pred: (T,) talker indices (-1 nobody, pred -2 unmatched); lip_moving (T, n)."""
        truth, pred = np.asarray(truth), np.asarray(pred)
        s = settled(truth, fps)
        self.settled_frames += int(s.sum())
        self.settled_correct += int((pred[s] == truth[s]).sum())
        self.latencies += turn_latencies(truth, pred, fps)
        lm = np.asarray(lip_moving, bool).reshape(len(truth), -1)
        for k in range(lm.shape[1]):
            d = lm[:, k] & (truth != k)
            self.distractor_pairs += int(d.sum())
            self.distractor_rejected += int((pred[d] != k).sum())

    def merge(self, o: SpeakerScores) -> None:
        self.settled_frames += o.settled_frames
        self.settled_correct += o.settled_correct
        self.latencies += o.latencies
        self.distractor_pairs += o.distractor_pairs
        self.distractor_rejected += o.distractor_rejected

    @property
    def accuracy(self) -> float:
        return self.settled_correct / self.settled_frames if self.settled_frames else float("nan")

    @property
    def latency_median_s(self) -> float:
        return float(np.median(self.latencies)) if self.latencies else float("nan")

    @property
    def missed_changes(self) -> int:
        return sum(1 for x in self.latencies if not np.isfinite(x))

    @property
    def distractor_rejection(self) -> float:
        return self.distractor_rejected / self.distractor_pairs if self.distractor_pairs else float("nan")
