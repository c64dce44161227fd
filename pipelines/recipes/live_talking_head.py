"""Recipe: a live talking head. Text arrives while the session runs; encoded audio and video
leave continuously, speech or not (the avatar idles between utterances).

    text ─► tts ─► visemes ─┬─ audio ─────────────────────────────► stream.audio ─► deliver()
     ▲   (LiveText) (LiveArticulate, paced: one frame per 1/fps)
     └ say / append / flush / clear (the owner)   └─ motion ─► idle ─► render ─► stream.video

Paced by the session's media clock: `visemes` releases frame k at most `lookahead_frames`
ahead of its media time k/fps, and every frame's deadline is its media time plus the
graph's latency budget. A motion frame still waiting for the renderer past its deadline is
dropped before rendering (DROP): with many sessions on one renderer, a session falls back
to a lower frame rate rather than behind real time. Audio is never dropped (BLOCK).
Engines (TTS per voice, the renderer per avatar and size) are shared by all sessions and
passed in started; the encoders belong to the session (`stream` creates them on its thread).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engines import EngineWorker
from engines.batcher import Batcher
from pipelines.media.live import AudioEncoder, EncodedPacket, H264Encoder, StreamSink
from pipelines.motion.live import LiveArticulate
from pipelines.motion.stages import Animate
from pipelines.render.stage import Render
from pipelines.speech.live import LiveSynthesize, LiveText, VoiceResolver
from realtime import Graph, LatePolicy


@dataclass(frozen=True, slots=True)
class LiveTalkingHead:
    """The graph and the two handles its owner drives: the text input and the stream sink."""

    graph: Graph
    text: LiveText
    stream: StreamSink
    articulate: LiveArticulate


def live_talking_head_graph(*, voices: VoiceResolver, default_voice: str,
                            renderer: EngineWorker[Any, Any] | Batcher[Any, Any],
                            sample_rate: int, fps: int, video: Callable[[], H264Encoder],
                            audio: Callable[[], AudioEncoder], deliver: Callable[[list[EncodedPacket]], None],
                            seed: int = 0, lookahead_frames: int = 2,
                            latency_budget_s: float = 0.150) -> LiveTalkingHead:
    g = Graph("live_talking_head", latency_budget_s=latency_budget_s)
    text = LiveText("text", default_voice=default_voice)
    articulate = LiveArticulate("visemes", fps=fps, sample_rate=sample_rate, lookahead_frames=lookahead_frames)
    stream = StreamSink("stream", video=video, audio=audio, deliver=deliver)
    g.add(text,
          LiveSynthesize("tts", voices),
          articulate,
          Animate("idle", seed=seed),
          # A session that fell behind hands the renderer all its queued frames at once (never
          # waits for more): one call per batch cycle then carries them all, so it catches up.
          Render("render", renderer, image_format="yuv420p", max_batch=4),
          stream)
    g.link("text.out", "tts.in", capacity=1, policy=LatePolicy.BLOCK)
    g.link("tts.out", "visemes.in", capacity=2, policy=LatePolicy.BLOCK)
    g.link("visemes.audio", "stream.audio", capacity=2 * fps, policy=LatePolicy.BLOCK)
    g.link("visemes.motion", "idle.in", capacity=4, policy=LatePolicy.BLOCK)
    g.link("idle.out", "render.in", capacity=4, policy=LatePolicy.DROP)
    g.link("render.out", "stream.video", capacity=4, policy=LatePolicy.BLOCK)
    return LiveTalkingHead(g, text, stream, articulate)
