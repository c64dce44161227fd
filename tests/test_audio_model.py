"""Claim: the audio-to-motion model moves the mouth causally, streamed in chunks of any size or
run whole alike (torch and onnxruntime), a saved checkpoint loads back to the same mouth on
speech and a corrupted one is refused, and the shipped weights' manifest records their
hash, the config that builds them and the figures the docs quote.

The model's contract, mostly independent of its trained weights."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.weights import WeightsError, verified_weights
from pipelines.motion.audio_model import (AudioToMotion, ModelConfig, StreamingAudioToMotion, infer,
                                          load_audio_model, token_centre, token_end)
from pipelines.motion.streaming_onnx import OnnxStep
from pipelines.motion.training.augment import add_noise, opus_round_trip
from pipelines.motion.training.train import TrainConfig, write_checkpoint


def _push_in_random_chunks(stream: StreamingAudioToMotion, x: np.ndarray, seed: int, max_chunk: int,
                           ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    got_t, got_p, i = [], [], 0
    while i < len(x):
        n = int(rng.integers(1, max_chunk))
        t, p = stream.push(x[i:i + n])
        got_t.append(t)
        got_p.append(p)
        i += n
    return np.concatenate(got_t), np.concatenate(got_p)


def test_streaming_in_random_chunks_equals_whole_signal() -> None:
    torch.manual_seed(0)
    model = AudioToMotion().eval()
    x = (np.random.default_rng(0).standard_normal(16000 * 5) * 0.1).astype(np.float32)  # 5 s > window
    times, whole = infer(model, x, 40)
    got_t, got_p = _push_in_random_chunks(StreamingAudioToMotion(model, 40), x, 1, 2500)
    assert np.allclose(got_t, times)
    assert np.allclose(got_p, whole, atol=1e-5)


def test_onnx_streaming_step_equals_whole_signal() -> None:
    """The live path's onnxruntime step: same outputs as whole-signal torch inference, from
    a fresh stream (empty cache slots masked) through more than one attention window."""
    torch.manual_seed(3)
    model = AudioToMotion(ModelConfig(press_gain=1.5)).eval()  # the calibration is inside the graph too
    x = (np.random.default_rng(4).standard_normal(16000 * 4) * 0.1).astype(np.float32)
    x[16000:24000] = 0  # digital silence: the rest gate inside the graph
    times, whole = infer(model, x, 80)
    step = OnnxStep.build(model)
    got_t, got = _push_in_random_chunks(StreamingAudioToMotion(model, 80, step), x, 5, 2000)
    assert np.allclose(got_t, times)
    assert got.shape == whole.shape and np.abs(got - whole).max() < 1e-4
    assert (got[52:72] == 0).all()  # digital silence: mouth at rest


def test_model_is_small_and_causal_with_lookahead_heads() -> None:
    cfg = ModelConfig()
    model = AudioToMotion(cfg).eval()
    assert model.n_parameters() <= 5_000_000
    assert cfg.lookaheads_ms == [0, 20, 40, 60, 80, 100, 120]
    # causality: changing the audio after token k's end leaves outputs up to k unchanged
    x = (np.random.default_rng(2).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    _, a = infer(model, x, 0)
    k = 40
    y = x.copy()
    y[int(token_end(k) * 16000):] = 0.5
    _, b = infer(model, y, 0)
    assert np.allclose(a[: k + 1], b[: k + 1], atol=1e-6) and not np.allclose(a[k + 5:], b[k + 5:])
    assert np.isclose(token_centre(0) - 0.0, 0.0175)  # 20 ms tokens of 10 ms frames, 25 ms windows


def _speech_16k(text: str = "The quick brown fox jumps over the lazy dog.") -> np.ndarray:
    """A spoken sentence (espeak-ng en-us) at the model's rate, 16 kHz."""
    from math import gcd

    from scipy.signal import resample_poly

    from pipelines.audio.features import SAMPLE_RATE
    from pipelines.speech.tts import SpeechSynthesizer

    utt = SpeechSynthesizer("en-us").synthesize(text)
    g = gcd(SAMPLE_RATE, utt.sample_rate)
    return resample_poly(utt.audio, SAMPLE_RATE // g, utt.sample_rate // g).astype(np.float32)


def _untrained(seed: int, cfg: ModelConfig, feats: np.ndarray) -> AudioToMotion:
    torch.manual_seed(seed)
    model = AudioToMotion(cfg).eval()
    with torch.no_grad():  # normalisation as training sets it: the buffers travel in the checkpoint too
        model.feat_mean.copy_(torch.from_numpy(feats.mean(0)))
        model.feat_std.copy_(torch.from_numpy(feats.std(0)))
    return model


def test_checkpoint_round_trip_and_hash_check(tmp_path: Path) -> None:
    from pipelines.audio.features import log_mel

    x = _speech_16k()
    cfg = ModelConfig(press_gain=1.5)  # not the default: the loader must take it from the manifest
    model = _untrained(0, cfg, log_mel(x))
    manifest = write_checkpoint(model, TrainConfig(), {"note": "test"}, str(tmp_path), {"total_s": 0})
    assert manifest["bytes"] <= 20e6
    loaded, m2 = load_audio_model(str(tmp_path))
    assert loaded.config == cfg and m2["sha256"] == manifest["sha256"]
    _, want = infer(model, x, 80)
    _, got = infer(loaded, x, 80)
    assert (np.abs(want).max(1) > 0).mean() > 0.5  # speech: the silence gate lets most tokens through
    assert np.abs(got - want).max() < 1e-6  # saved and loaded: the same mouth on speech
    # ... and that comparison can fail: another model of the same shape (other weights) moves
    # the mouth differently on the same speech
    _, other = infer(_untrained(1, cfg, log_mel(x)), x, 80)
    assert np.abs(other - want).max() > 0.1 and (np.abs(other - want).max(1) > 0.01).mean() > 0.5
    weights = tmp_path / "audio2motion.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match its manifest"):
        verified_weights("audio2motion", str(tmp_path))


def test_opus_round_trip_keeps_the_timeline() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(16000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    y = opus_round_trip(x, 16000)
    assert len(y) == len(x)
    lags = range(-40, 41)
    corr = [np.dot(x[40:-40], np.roll(y, -lag)[40:-40]) for lag in lags]
    assert abs(list(lags)[int(np.argmax(corr))]) <= 2  # aligned within 2 samples
    z = add_noise(x, 10.0, rng, None)
    snr = 10 * np.log10(np.mean(x[np.abs(x) > 0.006] ** 2) / np.mean((z - x) ** 2))
    assert 9.0 < snr < 11.0


REPO = Path(__file__).resolve().parent.parent


def _quoted_figures() -> dict[tuple[str, str], dict[str, float]]:
    """The evaluation table docs/audio-to-motion.md points to (BENCHMARKS.md, "Audio to
    motion"): {(degradation, predictor): {metric: value}}, as printed (3 decimals, lag in ms)."""
    text = (REPO / "BENCHMARKS.md").read_text()
    section = text[text.index("## Audio to motion"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] in ("call", "clean", "harsh"):
            names = ("jaw_r", "closure_recall", "closure_precision", "lag_ms", "rest_jaw")
            rows[(cells[0], cells[1])] = {k: float(v) for k, v in zip(names, cells[2:])}
    return rows


def test_shipped_manifest_records_config_and_figures() -> None:
    import dataclasses
    import hashlib

    from safetensors.torch import load_file

    from pipelines.motion.training.dataset import HELD_OUT, DataConfig

    path, manifest = verified_weights("audio2motion")
    assert os.path.getsize(path) == manifest["bytes"] <= 20e6
    # the hash it records is the shipped file's own
    assert manifest["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    # the config the checkpoint was built with: exactly the loader's ModelConfig fields, and
    # a model built from them takes every shipped tensor, none missing, none left over
    assert set(manifest["model"]) == {f.name for f in dataclasses.fields(ModelConfig)}
    model = AudioToMotion(ModelConfig(**manifest["model"]))
    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    assert missing == [] and unexpected == []
    assert model.n_parameters() == manifest["parameters"]
    loaded, _ = load_audio_model()
    assert loaded.config == ModelConfig(**manifest["model"])
    assert manifest["model"]["press_gain"] == manifest["calibration"]["press_gain"]  # the gain calibration chose
    assert set(manifest["training"]) == {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "data"}
    assert set(manifest["data"]) == {f.name for f in dataclasses.fields(DataConfig)}
    assert manifest["data"]["seed"] == manifest["training"]["seed"]
    assert manifest["data"]["lookaheads_ms"] == manifest["model"]["lookaheads_ms"]
    assert manifest["held_out_voices"] == list(HELD_OUT)
    ev = manifest["evaluation"]
    assert set(ev["call"]["voices"]) == set(manifest["held_out_voices"])
    # the figures the docs quote are the manifest's, number for number
    assert "BENCHMARKS.md" in (REPO / "docs" / "audio-to-motion.md").read_text()
    quoted = _quoted_figures()
    assert ("call", "model, look-ahead 80 ms") in quoted  # the headline: held-out voices, call audio
    assert len(quoted) == 15
    for (degradation, predictor), figures in quoted.items():
        key = "loudness_baseline" if predictor == "loudness baseline" else \
            "model_lookahead_" + predictor.split("look-ahead ")[1].replace(" ", "")
        recorded = ev[degradation][key]
        for metric, value in figures.items():
            number = recorded[metric]
            assert isinstance(number, (int, float)) and not isinstance(number, bool), (degradation, key, metric)
            assert round(number, 0 if metric == "lag_ms" else 3) == value, (degradation, key, metric, number, value)


def test_press_gain_scales_press_only_and_is_chosen_within_the_opening_bound() -> None:
    from pipelines.motion.audio_model import calibrated
    from pipelines.motion.training.calibrate import choose_press_gain

    y = torch.rand(1, 10, 7, 5)
    feats = torch.zeros(1, 20, 80)  # loud enough: no silence gate
    a, b = calibrated(y, feats, 1.0), calibrated(y, feats, 1.5)
    assert torch.equal(a[..., [0, 2, 3, 4]], b[..., [0, 2, 3, 4]])
    assert torch.allclose(b[..., 1], (1.5 * y[..., 1]).clamp_max(1.0))
    rows = [{"gain": 1.0, "f1": 0.50, "opening_r": 0.82}, {"gain": 1.5, "f1": 0.55, "opening_r": 0.815},
            {"gain": 2.0, "f1": 0.60, "opening_r": 0.80}]  # the best F1 costs too much opening r
    assert choose_press_gain(rows) == 1.5
