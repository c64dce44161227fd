"""Recipe: a live call with the avatar. The transport (WebRTC) supplies the caller's
microphone as a source stage and the avatar's tracks as a sink stage; everything between is
here, one graph per call.

    mic ─► resample ─► vad ─► mirror ───────────────────────┐ (caller's voice → mouth)
    text ─► tts ─► visemes (clock master) ◄─────────────────┘
                     ├─ audio ────────────────────────────────► call.audio
                     └─ motion ─► idle ─► render ─► video ────► call.video

`visemes` emits one audio chunk and one motion frame per 1/fps of media time, speech or not:
the avatar's own sentences (say), the caller mirrored (mirror mode), or idle life. Late
motion frames are dropped before rendering; towards the tracks a late video frame is replaced
by the last one (the browser sees a constant frame rate); audio is never dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engines import EngineWorker
from pipelines.audio.stages import DetectVoice, Resample
from pipelines.motion.mirror import CallArticulate, MirrorMouth
from pipelines.motion.stages import Animate
from pipelines.render.stage import Render
from pipelines.speech.live import LiveSynthesize, LiveText, VoiceResolver
from realtime import Graph, LatePolicy, Stage


@dataclass(frozen=True, slots=True)
class LiveCall:
    graph: Graph
    text: LiveText
    articulate: CallArticulate
    mirror: MirrorMouth

    def set_mirror(self, on: bool) -> None:
        """Mirror mode: the model runs on the caller's voice and the articulator shows it."""
        self.articulate.mirror = self.mirror.active = on


def live_call_graph(*, mic: Stage, sink: Stage, voices: VoiceResolver, default_voice: str,
                    renderer: EngineWorker[Any, Any], motion: EngineWorker[Any, Any], sample_rate: int,
                    fps: int, seed: int = 0, lookahead_ms: int = 40, mirror_delay_s: float = 0.10,
                    render_margin_s: float = 0.04, barge_in_min_speech_ms: int = 120,
                    latency_budget_s: float = 0.04, lead_frames: int = 3) -> LiveCall:
    """Frames are released `latency_budget_s` after their media time. Otherwise the articulator
    emits each frame `lead_frames` frame periods ahead of its media time (render time to spare
    when calls share the CPU; a barge-in silences audio already handed on); mirroring, it holds it until
    `render_margin_s` (idle, render, sink) before its release, so the lips show the latest audio; a
    margin beyond the budget emits it that much before its media time (the mirror delay pays for it)."""
    g = Graph("live_call", latency_budget_s=latency_budget_s)
    text = LiveText("text", default_voice=default_voice)
    articulate = CallArticulate("visemes", fps=fps, sample_rate=sample_rate, lookahead_frames=lead_frames,
                                mirror_delay_s=mirror_delay_s,
                                mirror_hold_s=latency_budget_s - render_margin_s)
    mirror = MirrorMouth("mirror", motion, lookahead_ms=lookahead_ms)
    g.add(mic, Resample("resample"),
          DetectVoice("vad", min_speech_ms=barge_in_min_speech_ms),
          mirror, text, LiveSynthesize("tts", voices), articulate,
          Animate("idle", seed=seed),
          Render("render", renderer, image_format="yuv420p", max_batch=4, in_flight=2),
          sink)
    g.link(f"{mic.name}.out", "resample.in", capacity=50, policy=LatePolicy.DROP)  # stale mic audio is useless
    g.link("resample.out", "vad.in", capacity=50, policy=LatePolicy.DROP)
    g.link("vad.out", "mirror.in", capacity=50, policy=LatePolicy.DROP)
    g.link("mirror.out", "visemes.mirror", capacity=100, policy=LatePolicy.DROP)
    g.link("text.out", "tts.in", capacity=1, policy=LatePolicy.BLOCK)
    g.link("tts.out", "visemes.in", capacity=2, policy=LatePolicy.BLOCK)
    g.link("visemes.audio", f"{sink.name}.audio", capacity=2 * fps, policy=LatePolicy.BLOCK)
    g.link("visemes.motion", "idle.in", capacity=4, policy=LatePolicy.BLOCK)
    g.link("idle.out", "render.in", capacity=4, policy=LatePolicy.DROP)
    g.link("render.out", f"{sink.name}.video", capacity=4, policy=LatePolicy.REPEAT_LAST)
    return LiveCall(g, text, articulate, mirror)
