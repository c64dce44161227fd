"""`avatar render`: run the text-to-video recipe once, into a file."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engines import EngineWorker, configure_torch_threads
from engines.devices import pick_device
from pipelines.media.mp4 import Mp4Writer
from pipelines.recipes.text_to_video import text_to_video_graph
from pipelines.render.avatar import Avatar, avatar_from_file, default_avatar
from pipelines.render.engine import renderer_engine
from pipelines.speech.stages import SpeechEngine
from pipelines.speech.tts import SpeechSynthesizer
from realtime import Event, RuntimeMetrics, Session, SessionFailed

from .settings import RenderRequest


class OutputPathError(ValueError):
    pass


@dataclass
class RenderResult:
    path: str
    media_seconds: float
    video_frames: int
    wall_seconds: float  # everything, from the call to the renamed file
    startup_seconds: float  # of which: loading the avatar, the voice and the renderer
    metrics: RuntimeMetrics


def check_output_path(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OutputPathError(f"output {path!r} is a directory")
    if not os.path.isdir(folder):
        raise OutputPathError(f"cannot write {path!r}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputPathError(f"cannot write {path!r}: folder {folder!r} is not writable")


async def load_avatar(req: RenderRequest) -> Avatar:
    if req.image is None:
        return await asyncio.to_thread(default_avatar, req.size)
    return await asyncio.to_thread(avatar_from_file, req.image, req.size, max_pixels=req.max_image_pixels)


async def render(req: RenderRequest, *, on_event: Callable[[Event], None] | None = None,
                 metrics: RuntimeMetrics | None = None) -> RenderResult:
    """Text (synthesized speech) or an audio file in, an MP4 out.

    Raises ValueError subclasses for bad requests (nothing written), and the cause of a
    stage's failure during the render (the partial file removed)."""
    req.check_source()
    out = os.fspath(req.output)
    check_output_path(out)
    device = pick_device(req.device)
    configure_torch_threads(req.threads)
    # What drives the mouth: checked before anything heavy is loaded.
    if req.audio is not None:
        from pipelines.audio.loading import load_audio
        from pipelines.motion.audio_stage import AudioMotionEngine
        from pipelines.recipes.audio_to_video import audio_to_video_graph

        samples, _ = await asyncio.to_thread(load_audio, req.audio, max_seconds=req.max_audio_seconds)
        driver: EngineWorker[Any, Any] = EngineWorker(AudioMotionEngine())
    else:
        text = req.check_text()
        synth = SpeechSynthesizer(req.voice, rate=req.rate, pitch=req.pitch)  # unknown voice fails here
        driver = EngineWorker(SpeechEngine(synth))
    avatar = await load_avatar(req)
    metrics = metrics or RuntimeMetrics()
    t0 = time.monotonic()
    writer = Mp4Writer(out, width=req.size, height=req.size, fps=req.fps)
    renderer = renderer_engine(avatar, "renderer", device)
    async with driver, EngineWorker(renderer) as render_worker:
        t_ready = time.monotonic()
        if req.audio is not None:
            graph = audio_to_video_graph(samples, motion=driver, renderer=render_worker, writer=writer,
                                         fps=req.fps, lookahead_ms=req.lookahead_ms, seed=req.seed)
        else:
            graph = text_to_video_graph(text, tts=driver, renderer=render_worker, writer=writer, fps=req.fps,
                                        seed=req.seed)
        session = Session(graph, paced=req.realtime, metrics=metrics, on_event=on_event)
        try:
            await session.run()
        except SessionFailed as failed:
            raise failed.error from None
    return RenderResult(out, writer.video_frames / req.fps, writer.video_frames, time.monotonic() - t0,
                        t_ready - t0, metrics)
