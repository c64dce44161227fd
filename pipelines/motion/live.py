"""The live articulator: one audio chunk and one motion frame every 1/fps of media time, speech
or not, paced by the session's media clock.

`Articulate` (stages.py) makes frames only while there is speech: right for a file. A live
avatar must keep living between utterances, so `LiveArticulate` runs a frame loop: frame k
(media time k/fps) is emitted when the clock reaches `origin + k/fps - lookahead`, i.e. at most
`lookahead_frames` ahead of its time, which keeps the latency from a finished sentence to its
first frame under one frame period while giving the renderer and encoder a little slack.
Frames carry silence and a closed mouth unless a sentence is being spoken; the idle stage
downstream adds blinks, sway and breathing either way.

A sentence starts at the first frame not yet emitted; a streamed sentence (the natural voice)
starts with only its first words of audio, and the rest arrives in pieces (SpokenAudio) while
those play; a piece that comes too late leaves a silent gap (counted in `underrun_frames`)
rather than stopping the clock. An interrupt (a new epoch) drops the rest
of the sentence being spoken at the next frame. Unpaced (tests, files) there is no idle: the
loop waits for speech, like `Articulate`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pipelines.speech.live import SpokenAudio, SpokenSegment
from pipelines.speech.types import Phoneme, Utterance
from realtime import AudioFrame, Channel, ChannelClosed, Stage, StageContext

from .events import UtteranceDone, UtteranceInterrupted, UtteranceStarted, VisemeTrack, WordSpoken
from .params import MOUTH, N_PARAMS, TONGUE, MotionFrame, video_time_base
from .visemes import mouth_params, tongue_params

# ARPAbet -> the 15 viseme classes most avatar tool chains use (Oculus / ARKit-style names),
# for the `viseme` events a client may drive its own face with.
VISEME_CLASS: dict[str, str] = {
    "SIL": "sil", "P": "PP", "B": "PP", "M": "PP", "F": "FF", "V": "FF", "TH": "TH", "DH": "TH",
    "T": "DD", "D": "DD", "K": "kk", "G": "kk", "HH": "kk", "CH": "CH", "JH": "CH", "SH": "CH",
    "ZH": "CH", "S": "SS", "Z": "SS", "N": "nn", "NG": "nn", "L": "nn", "R": "RR", "ER": "RR",
    "AA": "aa", "AE": "aa", "AH": "aa", "AY": "aa", "AW": "aa", "EH": "E", "EY": "E",
    "IH": "ih", "IY": "ih", "Y": "ih", "AO": "oh", "OW": "oh", "OY": "oh", "UH": "ou",
    "UW": "ou", "W": "ou",
}


def viseme_track(phonemes: list[Phoneme]) -> list[tuple[str, str, float, float]]:
    """(viseme, first phoneme, start_ms, end_ms), consecutive equal visemes merged."""
    out: list[tuple[str, str, float, float]] = []
    for p in phonemes:
        v = VISEME_CLASS.get(p.symbol, "sil")
        if out and out[-1][0] == v:
            out[-1] = (v, out[-1][1], out[-1][2], p.end_ms)
        else:
            out.append((v, p.symbol, p.start_ms, p.end_ms))
    return out


@dataclass(slots=True)
class _Speaking:
    spoken: SpokenSegment
    audio: np.ndarray  # the sentence's audio at the session rate, padded to whole frames
    mouth: np.ndarray  # (n, 5)
    start: int  # first frame index
    n: int
    have: int  # audio[:have] has arrived (all of it unless the sentence is streamed)
    raw: np.ndarray  # a streamed sentence's audio so far at the voice's rate (for resampling)
    complete: bool
    tongue: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (n,)

    @property
    def epoch(self) -> int:
        return self.spoken.segment.epoch

    def owns(self, piece: SpokenAudio) -> bool:
        return piece.segment == self.spoken.segment


class LiveArticulate(Stage):
    """SpokenSegments in; audio chunks and motion frames out, one of each per video frame.

    Events: `utterance_started` (first sentence of an utterance begins), `word` and `visemes`
    (media times, sent when a sentence is scheduled, ahead of its frames), `utterance_done`
    (its last frame was emitted), `utterance_interrupted` (cut by a new epoch). All carry
    `utterance_id` and `epoch`.
    """

    outputs = ("audio", "motion")

    def __init__(self, name: str, *, fps: int, sample_rate: int, lookahead_frames: int = 2,
                 budget_s: float = 0.010) -> None:
        super().__init__(name, budget_s=budget_s)
        self.fps, self.sample_rate = fps, sample_rate
        self.lookahead_s = lookahead_frames / fps
        self.frame = 0  # next video frame index on the session timeline
        self.underrun_frames = 0  # frames of a streamed sentence whose audio had not arrived
        self._atb, self._vtb = video_time_base(sample_rate), video_time_base(fps)
        self._held: object | None = None  # an item read while looking for audio pieces

    def _lead_s(self) -> float:
        """How long before its media time the next frame is emitted (negative: after)."""
        return self.lookahead_s

    def _boundary(self, frame: int) -> int:
        return (frame * self.sample_rate) // self.fps  # first audio sample of video frame `frame`

    async def run(self, ctx: StageContext) -> None:
        inp = ctx.input()
        meter = ctx.meter(self)
        cur: _Speaking | None = None
        while True:
            if ctx.paced:
                assert ctx.media_clock.origin is not None
                await ctx.clock.sleep_until(ctx.media_clock.origin + self.frame / self.fps - self._lead_s())
            if cur is not None and cur.epoch < ctx.epoch():
                ctx.report(UtteranceInterrupted(utterance_id=cur.spoken.segment.utterance_id,
                                                epoch=cur.epoch, media_time=self.frame / self.fps))
                cur = None
            while cur is None:
                spoken = await self._next(ctx, inp)
                if spoken is _IDLE:
                    break
                if spoken is None:
                    return  # end of stream
                meter.frames_in()
                t0 = ctx.clock.now()
                cur = self._start(ctx, spoken)  # type: ignore[arg-type]
                meter.work(ctx.clock.now() - t0)  # the viseme function, once per sentence
            if cur is not None and not cur.complete:
                await self._take_audio(ctx, inp, cur)
            await self._emit_frame(ctx, cur)
            meter.frames_out()
            if cur is not None and self.frame >= cur.start + cur.n:
                seg = cur.spoken.segment
                if seg.last:
                    ctx.report(UtteranceDone(utterance_id=seg.utterance_id, epoch=seg.epoch,
                                             media_time=self.frame / self.fps))
                cur = None

    async def _next(self, ctx: StageContext, inp: Channel[object]) -> SpokenSegment | object | None:
        """The next live segment; _IDLE if none is ready (paced); None at end of stream."""
        while True:
            if self._held is not None:
                item, self._held = self._held, None
            elif ctx.paced:
                item = inp.try_get()
                if item is None:
                    return None if inp.closed else _IDLE
            else:
                try:
                    item = await inp.get()
                except ChannelClosed:
                    return None
            if isinstance(item, SpokenSegment) and item.segment.epoch >= ctx.epoch():
                return item

    def _start(self, ctx: StageContext, spoken: SpokenSegment) -> _Speaking | None:
        """Schedule a sentence from the current frame on; None if it has no audio (then an
        utterance that ends with it ends here)."""
        seg, utt = spoken.segment, spoken.utterance
        t0 = self.frame / self.fps
        ident = {"utterance_id": seg.utterance_id, "epoch": seg.epoch}
        if seg.index == 0:
            ctx.report(UtteranceStarted(**ident, media_time=t0, text=seg.text))
        if utt is None or len(utt.audio) == 0:
            if seg.last:
                ctx.report(UtteranceDone(**ident, media_time=t0))
            return None
        total = round(utt.total_samples * self.sample_rate / utt.sample_rate)
        n = max(1, math.ceil(total * self.fps / self.sample_rate))
        while self._boundary(self.frame + n) - self._boundary(self.frame) < total:
            n += 1
        padded = np.zeros(self._boundary(self.frame + n) - self._boundary(self.frame), np.float32)
        cur = _Speaking(spoken, padded, np.zeros((0, 5)), self.frame, n, have=0,
                        raw=utt.audio.astype(np.float32, copy=False), complete=utt.pending == 0)
        self._fill(cur, utt.sample_rate)
        scale = total / utt.total_samples  # timings follow the audio if it was resampled
        for w in utt.words:
            ctx.report(WordSpoken(**ident, text=w.text, char_start=w.char_start, char_end=w.char_end,
                                  start=t0 + scale * w.start_ms / 1000, end=t0 + scale * w.end_ms / 1000))
        ctx.report(VisemeTrack(**ident, items=[(v, p, t0 + scale * s / 1000, t0 + scale * e / 1000)
                                               for v, p, s, e in viseme_track(utt.phonemes)]))
        phonemes = utt.phonemes if scale == 1.0 else [Phoneme(p.symbol, p.start_ms * scale, p.end_ms * scale)
                                                      for p in utt.phonemes]
        cur.mouth = mouth_params(phonemes, n, self.fps)
        cur.tongue = tongue_params(phonemes, n, self.fps)
        return cur

    def _fill(self, cur: _Speaking, rate: int) -> None:
        """Resample what has arrived of cur's audio into cur.audio (from cur.have on)."""
        raw = cur.raw
        if rate == self.sample_rate:
            end = min(len(raw), len(cur.audio))
            cur.audio[cur.have:end] = raw[cur.have:end]
            cur.have = end
            return
        # Linear interpolation on the sentence's one sample grid, so pieces join seamlessly:
        # output sample j sits at input position j * rate / sample_rate; only positions with
        # both neighbours present are made now (all of them once the sentence is complete).
        step = rate / self.sample_rate
        last = len(raw) - 1 if not cur.complete else len(raw) - 1 + step
        end = min(len(cur.audio), int(last / step) + 1) if len(raw) else cur.have
        if end > cur.have:
            x = np.arange(cur.have, end) * step
            cur.audio[cur.have:end] = np.interp(x, np.arange(len(raw)), raw)
            cur.have = end

    async def _take_audio(self, ctx: StageContext, inp: Channel[object], cur: _Speaking) -> None:
        """Adds the audio pieces of cur that have arrived. Unpaced, waits for the ones the next
        frame needs (nothing is late without a clock)."""
        need = self._boundary(self.frame + 1) - self._boundary(cur.start)
        rate = cur.spoken.utterance.sample_rate if cur.spoken.utterance else self.sample_rate
        while not cur.complete and self._held is None:
            if ctx.paced or cur.have >= need:
                item = inp.try_get()
                if item is None:
                    return
            else:
                try:
                    item = await inp.get()
                except ChannelClosed:
                    cur.complete = True
                    return
            if isinstance(item, SpokenAudio):
                if cur.owns(item):
                    cur.raw = np.concatenate([cur.raw, item.audio.astype(np.float32, copy=False)])
                    cur.complete = item.done
                    self._fill(cur, rate)
                continue  # a piece of an interrupted sentence: dropped
            self._held = item  # the next sentence: it waits for this one to end

    async def _emit_frame(self, ctx: StageContext, cur: _Speaking | None) -> None:
        k = self.frame
        a0, a1 = self._boundary(k), self._boundary(k + 1)
        params = np.zeros(N_PARAMS, dtype=np.float32)
        if cur is None:
            samples = np.zeros(a1 - a0, np.float32)
        else:
            base = self._boundary(cur.start)
            samples = cur.audio[a0 - base:a1 - base]
            if a1 - base > cur.have and not cur.complete:
                self.underrun_frames += 1
                ctx.metrics.speech_underruns.labels(ctx.graph).inc()
            params[MOUTH] = cur.mouth[k - cur.start]
            params[TONGUE] = cur.tongue[k - cur.start]
        stamp = ctx.stamp(k / self.fps)
        await ctx.output("audio").put(AudioFrame(pts=a0, time_base=self._atb, samples=samples,
                                                 sample_rate=self.sample_rate, **stamp))
        await ctx.output("motion").put(MotionFrame(pts=k, time_base=self._vtb, params=params, **stamp))
        self.frame = k + 1


_IDLE = object()

__all__ = ["VISEME_CLASS", "LiveArticulate", "viseme_track"]
