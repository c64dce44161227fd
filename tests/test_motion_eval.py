"""Claim: the shipped audio-to-motion model meets its documented figures on voices it never
heard, with call-like degradation (docs/audio-to-motion.md): recomputed from scratch (data
generated, model loaded, evaluated)."""
from __future__ import annotations

import pytest

from pipelines.motion.audio_model import load_audio_model
from pipelines.motion.training.augment import CALL, CLEAN
from pipelines.motion.training.dataset import HELD_OUT, DataConfig, build_eval_set
from pipelines.motion.training.evaluate import evaluate_all


@pytest.fixture(scope="module")
def figures() -> dict[str, dict[str, object]]:
    model, manifest = load_audio_model()
    cfg = DataConfig(**manifest["data"])  # the same seed and held-out list as the manifest's figures
    cfg.n_eval_per_voice = 8  # half the manifest's set: enough here, and the suite stays quick
    out = {}
    for sev in (CLEAN, CALL):
        eval_set = build_eval_set(cfg, severity=sev)
        assert {e.voice for e in eval_set} == set(HELD_OUT)
        out[sev.name] = evaluate_all(model, eval_set)
    return out


@pytest.mark.parametrize("lookahead", [40, 80, 120])
def test_held_out_voices_meet_the_bar(figures, lookahead: int) -> None:
    m = figures["clean"][f"model_lookahead_{lookahead}ms"]
    assert m["jaw_r"] >= 0.8, m
    assert m["closure_recall"] >= 0.8, m
    assert abs(m["lag_ms"]) <= 20, m


@pytest.mark.parametrize("lookahead", [40, 80, 120])
def test_with_call_degradation_the_model_beats_the_loudness_baseline(figures, lookahead: int) -> None:
    m = figures["call"][f"model_lookahead_{lookahead}ms"]
    base = figures["call"]["loudness_baseline"]
    assert m["jaw_r"] > base["jaw_r"] + 0.15, m
    assert m["closure_recall"] > base["closure_recall"] + 0.3, m
    assert abs(m["lag_ms"]) <= max(20, abs(base["lag_ms"])), m
    # The bar (0.8, 0.8) on the whole evaluation set: `avatar eval motion`,
    # BENCHMARKS.md (under call degradation at 80 ms: r 0.803-0.804, recall 0.804-0.821 over
    # three fresh syntheses of the set; met, narrowly). This half set is synthesized afresh on
    # each run; espeak's output varies by a few samples between calls, which moves closures by
    # a frame, so a half set swings by ~0.02. These bounds catch regressions only.
    assert m["jaw_r"] >= 0.74 and m["closure_recall"] >= 0.66, m


def test_rest_is_still(figures) -> None:
    assert figures["clean"]["model_lookahead_80ms"]["rest_jaw"] <= 0.08
