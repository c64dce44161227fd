"""pipelines/evaluation/perception_metrics.py: AVSBench's mask rules and the speaker metrics,
on hand-made masks and predictions whose right answers are worked out here."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation import perception_metrics as pm


def _avsbench_f_reference(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """AVSBench's _eval_pr + F for one frame, written out as in their loop (no sigmoid)."""
    th = np.linspace(0, 1 - 1e-10, 255).astype(np.float32)
    f = np.zeros(255)
    for i in range(255):
        y = (pred >= th[i]).astype(np.float64)
        tp = (y * gt).sum()
        p, r = tp / (y.sum() + 1e-20), tp / (gt.sum() + 1e-20)
        with np.errstate(invalid="ignore"):
            f[i] = 1.3 * p * r / (0.3 * p + r)
    return np.nan_to_num(f)


def test_iou_of_an_empty_ground_truth_is_the_backgrounds():
    gt = np.zeros((10, 10), bool)
    assert pm.frame_iou(None, gt) == pytest.approx(1.0)
    assert pm.frame_iou(np.ones((10, 10)), gt) == pytest.approx(0.0)
    pred = np.zeros((10, 10))
    pred[:, :3] = 0.9  # 30 % of the frame predicted: 70 % background right
    assert pm.frame_iou(pred, gt) == pytest.approx(0.7)


def test_iou_threshold_is_strictly_above_half():
    gt = np.zeros((4, 4), bool)
    gt[:2] = True
    pred = np.zeros((4, 4))
    pred[:2] = 0.5  # exactly 0.5 is not foreground
    assert pm.frame_iou(pred, gt) == pytest.approx(0.0)
    pred[:2] = 0.51
    pred[2, 0] = 0.8  # one extra pixel: 8 / 9
    assert pm.frame_iou(pred, gt) == pytest.approx(8 / 9)


def test_miou_averages_frames_including_empty_ones():
    gt1 = np.zeros((4, 4), bool)
    gt1[:2] = True
    gt2 = np.zeros((4, 4), bool)
    pred1 = gt1.astype(float)  # IoU 1
    pred2 = np.ones((4, 4))  # background IoU 0
    assert pm.miou([pred1, pred2], [gt1, gt2]) == pytest.approx(0.5)


def test_f_uses_beta2_0_3_and_skips_empty_frames():
    gt = np.zeros((10, 10), bool)
    gt[:5] = True  # 50 pixels
    pred = np.zeros((10, 10))
    pred[:10, :5] = 1.0  # 50 predicted, 25 right: precision 0.5, recall 0.5 at every threshold > 0
    pred[:5, 5:] = 0.0
    # threshold 0: everything predicted: precision 0.5, recall 1 -> F = 1.3 * 0.5 / (0.15 + 1)
    f0 = 1.3 * 0.5 * 1.0 / (0.3 * 0.5 + 1.0)
    assert pm.frame_f_curve(pred, gt)[0] == pytest.approx(f0)
    assert pm.frame_f_curve(pred, gt)[1:] == pytest.approx(np.full(254, 0.5))
    assert pm.fscore([pred], [gt]) == pytest.approx(f0)  # the max over thresholds
    # with beta^2 = 1 the threshold-0 F would be 2/3 and still the max; beta matters:
    assert f0 != pytest.approx(2 / 3)
    # an empty-ground-truth frame changes nothing (left out), whatever is predicted
    assert pm.fscore([pred, np.ones((10, 10))], [gt, np.zeros((10, 10), bool)]) == pytest.approx(f0)


def test_precision_weighted_over_recall():
    """beta^2 = 0.3 weighs precision: a small, exact mask beats a large, sloppy one."""
    gt = np.zeros((10, 10), bool)
    gt[:4] = True
    tight = np.zeros((10, 10))
    tight[:2] = 1.0  # precision 1, recall 0.5
    loose = np.ones((10, 10))  # precision 0.4, recall 1
    assert pm.fscore([tight], [gt]) > pm.fscore([loose], [gt])
    # tight: 1.3 * 0.5 / (0.3 + 0.5) = 0.8125 (from threshold > 0; threshold 0 gives 0.4's F)
    assert pm.fscore([tight], [gt]) == pytest.approx(0.8125)


def test_f_curve_matches_avsbench_loop_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(5):
        gt = rng.random((24, 32)) < rng.uniform(0.05, 0.5)
        pred = np.clip(rng.random((24, 32)) * 0.6 + 0.4 * gt, 0, 1).astype(np.float32)
        pred[rng.random(pred.shape) < 0.05] = 1.0
        pred[rng.random(pred.shape) < 0.05] = 0.0
        assert pm.frame_f_curve(pred, gt) == pytest.approx(_avsbench_f_reference(pred, gt), abs=1e-9)


def test_f_is_averaged_over_frames_before_the_max():
    gt = np.zeros((10, 10), bool)
    gt[:5] = True
    a = np.where(gt, 0.9, 0.0)  # perfect from any threshold up to 0.9
    b = np.where(gt, 0.2, 0.0)  # perfect up to 0.2 only, then nothing (F 0)
    curve = (pm.frame_f_curve(a, gt) + pm.frame_f_curve(b, gt)) / 2
    assert pm.fscore([a, b], [gt, gt]) == pytest.approx(curve.max())
    assert pm.fscore([a, b], [gt, gt]) == pytest.approx(1.0)  # at a threshold <= 0.2 both are perfect
    c = np.where(gt, 0.9, 0.0)
    c[0, 0] = 0.0  # now the max over per-frame maxima would differ from the max of the mean
    s = pm.MaskScores()
    for p in (b, c):
        s.add(p, gt)
    assert s.fscore == pytest.approx(((pm.frame_f_curve(b, gt) + pm.frame_f_curve(c, gt)) / 2).max())


def test_negative_rates():
    s = pm.MaskScores()
    empty = np.zeros((10, 10), bool)
    s.add(None, empty)
    s.add(np.zeros((10, 10)), empty)
    m = np.zeros((10, 10))
    m[0, :5] = 0.5  # >= 0.5: a sounding mask by issue 13's rule, but no pixel > 0.5 for AVSBench-Robust
    s.add(m, empty)
    m2 = np.zeros((10, 10))
    m2[:2] = 1.0
    s.add(m2, empty)
    assert s.negative_frames == 4
    assert s.negative_mask_rate == pytest.approx(2 / 4)
    assert s.negative_fpr == pytest.approx((0 + 0 + 0 + 0.2) / 4)
    gt = empty.copy()
    gt[0] = True
    s.add(m2, gt)  # a positive frame is not a negative
    assert s.negative_frames == 4


def test_mask_size_mismatch_is_an_error():
    with pytest.raises(ValueError):
        pm.frame_iou(np.zeros((5, 5)), np.zeros((4, 4), bool))


def test_match_talker_by_box_iou():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    assert pm.match_talker(None, boxes) == pm.NOBODY
    assert pm.match_talker((21, 1, 31, 11), boxes) == 1
    assert pm.match_talker((8, 0, 18, 10), boxes) == pm.UNMATCHED  # IoU 2/18 with talker 0
    assert pm.match_talker((4, 0, 14, 10), boxes) == 0  # IoU 6/14 >= 0.3


def test_settled_frames_and_accuracy():
    fps = 10
    truth = np.array([0] * 25 + [1] * 15 + [-1] * 5)
    s = pm.settled(truth, fps)
    assert not s[:10].any() and s[10:25].all()  # 1 s after the start
    assert not s[25:35].any() and s[35:40].all()
    assert not s[40:].any()  # the silent turn is shorter than 1 s
    pred = truth.copy()
    pred[:10] = 1  # wrong while unsettled: does not count
    pred[36] = 0  # wrong once on a settled frame
    sc = pm.SpeakerScores()
    sc.add_scene(truth, pred, np.zeros((45, 2), bool), fps)
    assert sc.settled_frames == 20
    assert sc.accuracy == pytest.approx(19 / 20)


def test_turn_latency_needs_three_stable_frames():
    fps = 25
    truth = np.array([0] * 50 + [1] * 50 + [0] * 50)
    pred = truth.copy()
    pred[50:60] = 0  # 10 frames late...
    pred[61] = 0  # ...and a flicker back: the new state holds for 3 frames only from 62
    pred[100:105] = 1  # 5 frames late
    lat = pm.turn_latencies(truth, pred, fps)
    assert lat == pytest.approx([12 / 25, 5 / 25])
    never = truth.copy()
    never[100:] = 1
    lat = pm.turn_latencies(truth, never, fps)
    assert lat[0] == 0 and lat[1] == float("inf")
    sc = pm.SpeakerScores()
    sc.add_scene(truth, never, np.zeros((150, 1), bool), fps)
    assert sc.missed_changes == 1


def test_distractor_rejection_counts_only_lips_moving_to_other_speech():
    truth = np.array([0, 0, 0, -1, -1, 1])
    lip = np.zeros((6, 2), bool)
    lip[:3, 0] = True  # talker 0 speaking: not a distractor
    lip[:5, 1] = True  # talker 1 mouths other speech on frames 0-4; on 5 it is heard
    lip[5, 1] = True
    pred = np.array([0, 1, 0, -1, 1, 1])  # taken as the speaker on frames 1 and 4
    sc = pm.SpeakerScores()
    sc.add_scene(truth, pred, lip, 25)
    assert sc.distractor_pairs == 5
    assert sc.distractor_rejection == pytest.approx(3 / 5)


def test_runner_scores_an_oracle_perfectly_and_a_blind_one_not():
    """perception_eval's scoring on a small generated scene: a Perceiver stand-in that returns
    the ground truth scores 1.0 everywhere; one that sees nothing scores the negatives only."""
    from pipelines.evaluation import perception_eval as pe
    from pipelines.evaluation import perception_scenes as ps
    from pipelines.perception.types import FaceObservation, Perception

    sc = ps.make_scene("moving_object", 3, duration=2.0, n_talkers=0, size=(160, 120))
    sc.speaker[:] = -1
    oracle = {j: Perception(t=j / sc.fps, index=j, faces=(), speaker=None,
                            mask=sc.masks[j].astype(np.float32) if sc.masks[j].any() else None,
                            mask_kind="motion", speech=0.0, saliency=0.0, analysed=True)
              for j in range(sc.n_frames)}
    g = pe.score_scene(sc, oracle, {"frames": sc.n_frames}, 1.0)
    f = g.figures()
    assert f["miou"] == pytest.approx(1.0) and f["fscore"] == pytest.approx(1.0)
    assert f["negative_mask_rate"] == 0 and f["speaker_accuracy_settled"] == 1.0
    blind = pe.score_scene(sc, {}, {"frames": sc.n_frames}, 1.0).figures()
    assert blind["frames_without_result"] == sc.n_frames
    # threshold 0 takes every pixel (as AVSBench's does): F is that of the whole frame, small
    assert 0 < blind["fscore"] < 0.2
    # nothing predicted: IoU 1 on the frames where nothing sounds, 0 on the others
    assert blind["miou"] == pytest.approx(blind["negative_frames"] / sc.n_frames, abs=1e-6)
    assert blind["miou"] < 0.9
    # a face named as speaker is mapped to a talker through its box
    boxes = np.array([[[0, 0, 10, 10], [20, 0, 30, 10]]] * 2, np.float32)
    sc2 = ps.Scene(np.zeros((2, 8, 8, 3), np.uint8), np.zeros(1280, np.float32), 25, np.array([1, 1]),
                   np.zeros((2, 8, 8), bool), boxes, np.zeros((2, 2), bool), "talkers", 0)
    face = FaceObservation(id=7, box=(19, 1, 29, 11), speaking=0.9, mouth=0.1, looking=None, yaw=0, pitch=0, fresh=True)
    res = {0: Perception(0.0, 0, (face,), 7, None, None, 1.0, 0.0, True),
           1: Perception(0.04, 1, (face,), 3, None, None, 1.0, 0.0, True)}  # id 3: not among its faces
    assert list(pe.predicted_talkers(sc2, res)) == [1, pm.UNMATCHED]
