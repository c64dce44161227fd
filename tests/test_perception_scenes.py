"""pipelines/evaluation/perception_scenes.py: the generated scenes' ground truth is what was
drawn and heard. Small, short scenes (320x240, 2-3 s) on a flat background, so every pixel
that is not the background colour belongs to a sprite."""
from __future__ import annotations

import av
import numpy as np
import pytest

from pipelines.evaluation import perception_scenes as ps

GREEN = (0, 255, 0)
SMALL = {"size": (320, 240), "flat_background": GREEN}


def _not_background(frames: np.ndarray) -> np.ndarray:
    return (frames != np.array(GREEN, np.uint8)).any(-1)


@pytest.fixture(scope="module")
def one_talker() -> ps.Scene:
    return ps.make_scene("talkers", 8, duration=3.0, degrade=False, n_talkers=1, **SMALL)


def test_speaker_mask_is_exactly_the_talkers_pixels(one_talker):
    sc = one_talker
    assert sc.frames.shape == (75, 240, 320, 3) and sc.masks.shape == (75, 240, 320)
    speaking = sc.speaker == 0
    assert 20 <= speaking.sum() < 75  # some speech, and the silence before the first turn
    painted = _not_background(sc.frames)
    for j in np.flatnonzero(speaking):
        assert np.array_equal(sc.masks[j], painted[j]), j
    assert not sc.masks[~speaking].any()  # nobody heard: no mask
    assert painted[~speaking].any(axis=(1, 2)).all()  # though the talker is on screen


def test_heard_talker_lips_move_and_audio_is_there(one_talker):
    sc = one_talker
    assert sc.audio.dtype == np.float32 and len(sc.audio) == 3 * 16000
    per = 16000 // sc.fps
    rms = np.sqrt((sc.audio[: sc.n_frames * per].reshape(sc.n_frames, per) ** 2).mean(1))
    heard = sc.speaker == 0
    assert np.median(rms[heard]) > 10 * np.median(rms[:5])  # speech while heard, quiet before
    assert sc.lip_moving[heard, 0].all()


def test_mouth_region_moves_when_lips_move(one_talker):
    sc = one_talker
    lum = sc.frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    level = np.empty(sc.n_frames)
    for j in range(sc.n_frames):
        x0, y0, x1, y1 = sc.talker_boxes[j, 0]
        w, h = x1 - x0, y1 - y0
        level[j] = lum[j, int(y0 + 0.62 * h):int(y0 + 0.9 * h), int(x0 + 0.3 * w):int(x1 - 0.3 * w)].mean()
    change = np.abs(np.diff(level))
    moving = sc.lip_moving[1:, 0] & sc.lip_moving[:-1, 0]
    still = ~sc.lip_moving[1:, 0] & ~sc.lip_moving[:-1, 0]
    assert still.sum() >= 3 and moving.sum() >= 20
    assert change[moving].mean() > 2 * change[still].mean()


def test_face_boxes_lie_on_the_painted_face(one_talker):
    sc = one_talker
    painted = _not_background(sc.frames)
    for j in (0, 40, 74):
        x0, y0, x1, y1 = sc.talker_boxes[j, 0].round().astype(int)
        assert 30 <= x1 - x0 <= 120  # face width scaled to the 320 px frame
        assert painted[j, y0 + 2:y1 - 2, x0 + 2:x1 - 2].mean() > 0.97


def test_noise_is_added_at_the_snr_asked():
    rng = np.random.default_rng(0)
    x = np.zeros(16000, np.float32)
    x[4000:12000] = 0.1 * np.sin(np.arange(8000) / 5)
    active = x != 0
    for snr in (20.0, 5.0):
        y = ps.add_noise(x, active, snr, rng)
        n = y - x
        assert 10 * np.log10(np.mean(x[active] ** 2) / np.mean(n ** 2)) == pytest.approx(snr, abs=0.01)
    assert ps.SNRS_DB[8 % len(ps.SNRS_DB)] is None  # the fixture's scene is clean


def test_negatives_have_no_mask_and_no_speaker():
    for kind in ("silence", "noise", "offscreen"):
        sc = ps.make_scene(kind, 3, duration=2.0, n_talkers=1, degrade=False, **SMALL)
        assert not sc.masks.any() and (sc.speaker == -1).all(), kind
        loud = float(np.sqrt(np.mean(sc.audio ** 2)))
        assert (loud < 1e-3) if kind == "silence" else (loud > 0.01), (kind, loud)
        if kind == "offscreen" and "distractor" in sc.info:  # lips moving to speech nobody hears
            assert sc.lip_moving[:, 0].any()
        if kind in ("silence", "noise"):
            assert not sc.lip_moving.any()


def test_static_object_mask_is_the_still_loudspeaker():
    sc = ps.make_scene("static_object", 5, duration=2.0, n_talkers=0, **SMALL)
    on = sc.masks.any((1, 2))
    assert on.sum() > 25
    painted = _not_background(sc.frames)
    first = sc.masks[np.flatnonzero(on)[0]]
    for j in np.flatnonzero(on):
        assert np.array_equal(sc.masks[j], first) and np.array_equal(sc.masks[j], painted[j])
    assert np.array_equal(sc.frames[0], sc.frames[-1])  # nothing moves


def test_moving_object_moves_with_its_sound():
    sc = ps.make_scene("moving_object", 5, duration=3.0, n_talkers=0, **SMALL)
    painted = _not_background(sc.frames)
    on = sc.masks.any((1, 2))
    assert 10 < on.sum() < sc.n_frames
    for j in np.flatnonzero(on):
        assert np.array_equal(sc.masks[j], painted[j])
    top = np.array([np.flatnonzero(painted[j].any(1))[0] for j in range(sc.n_frames)])
    per = 16000 // sc.fps
    energy = np.sqrt((sc.audio[: sc.n_frames * per].reshape(sc.n_frames, per) ** 2).mean(1))
    assert np.corrcoef(-top, energy)[0, 1] > 0.6  # it jumps (its top rises) when it sounds


def test_deterministic_and_cached_exactly(tmp_path, monkeypatch):
    a = ps.make_scene("moving_object", 9, duration=1.0, n_talkers=0, size=(160, 120))
    b = ps.make_scene("moving_object", 9, duration=1.0, n_talkers=0, size=(160, 120))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    c = ps.make_scene("moving_object", 10, duration=1.0, n_talkers=0, size=(160, 120))
    assert not np.array_equal(a.frames, c.frames)
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path))
    first = ps.load_scene("moving_object", 9, duration=1.0, n_talkers=0, size=(160, 120))
    assert any(tmp_path.rglob("frames.mkv"))
    again = ps.load_scene("moving_object", 9, duration=1.0, n_talkers=0, size=(160, 120))  # from disk
    for x, y in ((first, again), (a, again)):
        assert np.array_equal(x.frames, y.frames) and np.array_equal(x.masks, y.masks)
        assert np.array_equal(x.audio, y.audio) and np.array_equal(x.speaker, y.speaker)
        assert x.kind == y.kind and x.seed == y.seed


def test_to_mp4_has_video_and_audio(tmp_path):
    sc = ps.make_scene("static_object", 4, duration=1.2, n_talkers=0, size=(160, 120))
    path = sc.to_mp4(tmp_path / "s.mp4")
    with av.open(path) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, a.codec_context.name) == ("h264", "aac")
        frames = list(c.decode(video=0))
    assert len(frames) == sc.n_frames and frames[0].width == 160
    assert not list(tmp_path.glob(".partial-*"))


def test_test_set_covers_every_kind():
    kinds = {k for k, _ in ps.TEST_SCENES}
    assert kinds == set(ps.KINDS)
    assert len(set(ps.TEST_SEEDS)) == len(ps.TEST_SEEDS) >= 12
    with pytest.raises(ValueError):
        next(ps.test_set([12345], progress=False))
    with pytest.raises(ValueError):
        ps.make_scene("nonsense", 1)
