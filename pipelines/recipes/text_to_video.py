"""Recipe: text in, a talking-head video out. The graph below is the whole data path.

    text ─► tts ─► visemes ─┬─ audio ─────────────────────────────► mp4.audio
                            └─ motion ─► idle ─► render ─► video ─► mp4.video

Audio is never dropped (BLOCK). Video frames late for their presentation time are dropped
before rendering (nothing is gained by rendering them) and, towards the sink, replaced by
the last good frame so the frame rate holds. Offline (unpaced) no frame is ever late.
"""
from __future__ import annotations

from typing import Any

from engines import EngineWorker
from pipelines.media.mp4 import Mp4Writer
from pipelines.media.stages import Mp4Sink
from pipelines.motion.stages import Animate, Articulate
from pipelines.render.stage import Render
from pipelines.speech.stages import Synthesize, TextSegment, TextSource
from pipelines.speech.types import Utterance
from realtime import Graph, LatePolicy


def text_to_video_graph(text: str, *, tts: EngineWorker[TextSegment, Utterance],
                        renderer: EngineWorker[Any, Any], writer: Mp4Writer, fps: int, seed: int = 0,
                        lead_in_s: float = 0.2, tail_s: float = 0.3, max_batch: int = 4,
                        image_format: str = "yuv420p") -> Graph:
    g = Graph("text_to_video", latency_budget_s=0.25)
    g.add(TextSource("text", [text]),
          Synthesize("tts", tts),
          Articulate("visemes", fps=fps, lead_in_s=lead_in_s, tail_s=tail_s),
          Animate("idle", seed=seed),
          Render("render", renderer, image_format=image_format, max_batch=max_batch),
          Mp4Sink("mp4", writer))
    g.link("text.out", "tts.in", capacity=2, policy=LatePolicy.BLOCK)
    g.link("tts.out", "visemes.in", capacity=2, policy=LatePolicy.BLOCK)
    g.link("visemes.audio", "mp4.audio", capacity=4 * fps, policy=LatePolicy.BLOCK)
    g.link("visemes.motion", "idle.in", capacity=8, policy=LatePolicy.BLOCK)
    g.link("idle.out", "render.in", capacity=8, policy=LatePolicy.DROP)
    g.link("render.out", "mp4.video", capacity=8, policy=LatePolicy.REPEAT_LAST)
    return g
