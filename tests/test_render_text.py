"""Claim: `avatar render --text` gives a user a 512² 25 fps MP4 with audio and video in sync, the
mouth following the speech and closing on p, b, m, the background and the resting face the
photograph's — checked from decoded pixels and samples."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from avatar.render import render
from avatar.settings import RenderRequest
from pipelines.evaluation.lipsync import MouthProbe, loudness_envelope, lipsync_report, mouth_gaps
from pipelines.motion.params import N_PARAMS
from pipelines.render.avatar import default_avatar
from pipelines.render.face_mesh import FACE_OVAL
from pipelines.render.renderer import WarpRenderer
from realtime import Event

from mediafile import Decoded, decode

FOX = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def fox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Decoded, list[Event], object]:
    out = tmp_path_factory.mktemp("render") / "fox.mp4"
    events: list[Event] = []
    result = asyncio.run(render(RenderRequest(text=FOX, output=out, threads=1), on_event=events.append))
    return decode(str(out)), events, result


def test_file_is_512_square_25fps_with_one_audio_stream_in_sync(fox) -> None:
    media, _, _ = fox
    assert (media.width, media.height) == (512, 512)
    assert media.fps == 25 and media.video_codec == "h264"
    assert media.n_video_streams == 1 and media.n_audio_streams == 1 and media.audio_codec == "aac"
    assert media.video_seconds > 2.0  # the sentence takes well over two seconds to say
    assert abs(media.video_seconds - media.audio_seconds) <= 1 / 25
    assert np.allclose(np.diff(media.video_pts_s), 1 / 25)


def test_mouth_follows_speech_loudness_and_closes_on_bilabials(fox) -> None:
    media, events, _ = fox
    avatar = default_avatar(512)
    gaps = mouth_gaps(media.frames, MouthProbe.for_landmarks(avatar.landmarks))
    envelope = loudness_envelope(media.audio, media.sample_rate, 25, len(media.frames))
    phonemes = [e for e in events if e.kind == "phonemes"][0].data["items"]
    closures = [int((s + e) / 2 * 25) for sym, s, e in phonemes if sym in ("P", "B", "M")]
    assert len(closures) >= 3  # brown, jumps (m, p)
    report = lipsync_report(gaps, envelope, closures)
    assert report.pearson_r >= 0.5, report
    assert abs(report.lag_frames) <= 1, report
    assert report.max_gap >= 8  # the mouth really opens (pixels at 512x512)
    assert report.worst_closure_ratio <= 0.10, report


def test_background_is_the_reference(fox) -> None:
    media, _, _ = fox
    ref = default_avatar(512).image.astype(np.float64)
    away = np.zeros((512, 512), bool)  # away from the head: side strips and the bottom
    away[:, :60] = away[:, 460:] = away[440:, :] = True
    for frame in media.frames[::10]:
        err = (frame.astype(np.float64) - ref)[away]
        psnr = 10 * np.log10(255.0**2 / np.mean(err**2))
        assert psnr >= 35.0


def test_neutral_closed_mouth_frame_keeps_the_face() -> None:
    avatar = default_avatar(512)
    with torch.inference_mode():
        frame = WarpRenderer(avatar)(torch.zeros(1, N_PARAMS))[0].numpy()
    oval = avatar.landmarks[list(FACE_OVAL)]
    x0, y0 = np.floor(oval.min(0)).astype(int)
    x1, y1 = np.ceil(oval.max(0)).astype(int)
    ssim = structural_similarity(avatar.image[y0:y1, x0:x1], frame[y0:y1, x0:x1], channel_axis=2, data_range=255)
    assert ssim >= 0.95
    gap = mouth_gaps([frame], MouthProbe.for_landmarks(avatar.landmarks))[0]
    assert gap == 0  # closed (the photograph itself shows teeth)


def test_offline_render_misses_no_deadline_and_drops_nothing(fox) -> None:
    media, events, result = fox
    m = result.metrics
    assert m.value("avatar_stage_frames_out_total", graph="text_to_video", stage="render") == len(media.frames)
    dropped = [s for s in m.registry.collect() if s.name == "avatar_frames_dropped"]
    assert all(sample.value == 0 for fam in dropped for sample in fam.samples)
    words = [e.data for e in events if e.kind == "word"]
    assert [w["text"].lower().strip(".") for w in words] == FOX.lower().strip(".").split()
    assert all(0 <= w["start"] < w["end"] <= media.audio_seconds for w in words)


def test_other_size_and_fps(tmp_path: Path) -> None:
    out = tmp_path / "small.mp4"
    asyncio.run(render(RenderRequest(text="Hello there.", output=out, size=256, fps=30, voice="en-us", threads=1)))
    media = decode(str(out))
    assert (media.width, media.height, media.fps) == (256, 256, 30)
    assert abs(media.video_seconds - media.audio_seconds) <= 1 / 30


def test_long_text_is_streamed_sentence_by_sentence(tmp_path: Path) -> None:
    """Video is already being written while later sentences are still to be synthesized."""
    text = " ".join(f"This is sentence number {n}." for n in range(1, 9))
    events: list[Event] = []
    asyncio.run(render(RenderRequest(text=text, output=tmp_path / "long.mp4", voice="en-us", threads=1),
                       on_event=events.append))
    kinds = [(e.kind, e.data) for e in events]
    synthesized = [i for i, (k, _) in enumerate(kinds) if k == "synthesized"]
    first_video = next(i for i, (k, d) in enumerate(kinds) if k == "written" and d["stream"] == "video")
    assert len(synthesized) == 8
    assert first_video < synthesized[-1]
    offsets = [d["offset"] for k, d in kinds if k == "synthesized"]
    assert offsets == [text.index(f"number {n}") - len("This is sentence ") for n in range(1, 9)]


def test_live_mode_runs_the_same_graph_paced_to_the_clock(tmp_path: Path) -> None:
    out = tmp_path / "live.mp4"
    result = asyncio.run(render(RenderRequest(text="Hello there.", output=out, voice="en-us", size=256,
                                              realtime=True, threads=1)))
    media = decode(str(out))
    assert abs(media.video_seconds - media.audio_seconds) <= 1 / 25
    # paced: it takes as long as the media lasts (plus the playout delay), not a fraction of it
    assert result.wall_seconds - result.startup_seconds >= 0.9 * result.media_seconds
    late = result.metrics.value("avatar_deadline_misses_total", graph="text_to_video",
                                channel="render.out->mp4.video", policy="repeat_last")
    assert late <= 0.1 * result.video_frames  # a 256x256 render keeps up on this machine
