"""Perception of one audio-visual stream: frames and audio in, one `Perception` per frame out.

    frame ─► glance (low-res change, audio onset) ─► detector? ─► tracker ─► mesh? per face
                                                                     │
    audio ─► loudness, silero speech ───────────────┬─ sync per face ─► speaker ─► mask ─► events
                                                    └─ motion/sound patches (non-face sounds)

Full mode runs the detector and the mesh on every frame and the segmenter on every frame with
a speaker. Glance mode runs them where the glance says: the detector every DETECT_EVERY
frames or when something changes outside the faces tracked, the mesh on each face every
MESH_EVERY frames (more often around a speech onset or when the face moves, the mouth
between readings interpolated), the segmenter every SEGMENT_EVERY frames of a speaker (its
mask shifted with the face between). A frame's result waits `lookahead_s` for the audio and
frames after it (the sync window ends there), so results come that much behind the input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio import AudioTimeline
from .events import EventTracker
from .faces import FaceDetector, FaceMeasure, FaceTracker, MeshReader
from .masks import MotionSoundMap, PersonSegmenter, person_of
from .speaker import SPEECH_HANGOVER_S, WINDOW_S, SpeakerChooser, mouth_series, score, sync
from .types import Box, FaceObservation, Perception

DETECT_EVERY = 25
MESH_EVERY = 2
SEGMENT_EVERY = 5
FACE_MOVE = 6.0  # glance: mean low-res grey change inside a face box that calls the mesh now
NEW_THING = 4.0
MAX_WINDOW_S = 3.0  # the longest sync window (a long turn)
PAUSE_S = 0.2  # silence that ends a turn's window  # glance: mean change in a patch group outside the faces that calls the detector


@dataclass
class _Pending:
    index: int
    t: float
    rgb: np.ndarray
    faces: list[tuple[int, Box, FaceMeasure | None, bool]]  # id, box, latest measure, measured now
    saliency: float


class Perceiver:
    def __init__(self, *, fps: float, glance: bool = False, lookahead_s: float = 0.2, masks: bool = True) -> None:
        self.fps, self.glance, self.lookahead_s, self.masks = float(fps), glance, lookahead_s, masks
        self.audio = AudioTimeline()
        self.detector = FaceDetector()
        self._meshes: dict[int, MeshReader] = {}  # one per tracked face (tracking mode)
        self.segmenter = PersonSegmenter() if masks else None
        self.tracker = FaceTracker()
        self.motion = MotionSoundMap()
        self.chooser = SpeakerChooser()
        self.events = EventTracker()
        self.counters = {"frames": 0, "detector_calls": 0, "mesh_calls": 0, "segmenter_calls": 0}
        self._pending: list[_Pending] = []
        self._times: dict[int, float] = {}
        self._index = 0
        self._last_t = -1.0
        self._prev_low: np.ndarray | None = None
        self._last_seg: tuple[int, np.ndarray, Box] | None = None  # frame, person prob, speaker box
        self._last_onset_check = 0.0

    # --- input ------------------------------------------------------------------------

    def push_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        self.audio.push(samples, sample_rate)

    def push_frame(self, rgb: np.ndarray, t: float) -> list[Perception]:
        rgb = np.asarray(rgb)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
            raise ValueError(f"a frame must be HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
        i = self._index
        self._index += 1
        self.counters["frames"] += 1
        self._times[i] = t
        self._last_t = max(self._last_t, t)
        low = self.motion.push(i, rgb)
        saliency, calls_detector, move = self._glance(i, t, low)
        if not self.glance or calls_detector or i % DETECT_EVERY == 0:
            self.counters["detector_calls"] += 1
            self.tracker.update(self.detector(rgb), t)
        for gone in self.tracker.expire(t):
            self._meshes.pop(gone, None)
        onset = self._speech_onset(t)
        faces: list[tuple[int, Box, FaceMeasure | None, bool]] = []
        for tid, tr in sorted(self.tracker.tracks.items()):
            due = (not self.glance or (i + tid) % MESH_EVERY == 0 or onset or move.get(tid, 0.0) >= FACE_MOVE
                   or tr.measure is None)
            fresh = False
            if due:
                self.counters["mesh_calls"] += 1
                mesh = self._meshes.get(tid) or self._meshes.setdefault(tid, MeshReader())
                m = mesh(rgb, tr.box)
                if m is not None:
                    self.tracker.measured(tid, m, t, i)
                    fresh = True
            if tr.confirmed:
                faces.append((tid, tr.box, tr.measure, fresh))
        self._pending.append(_Pending(i, t, rgb, faces, saliency))
        return self._ready(final=False)

    def finish(self) -> list[Perception]:
        return self._ready(final=True)

    # --- the glance -------------------------------------------------------------------

    def _glance(self, i: int, t: float, low: np.ndarray) -> tuple[float, bool, dict[int, float]]:
        """Saliency of the frame (low-res change and audio energy), whether something changed
        where no face is tracked (the detector should look), and the change inside each face."""
        prev, self._prev_low = self._prev_low, low
        if prev is None or prev.shape != low.shape:
            return 1.0, True, {}
        d = np.abs(low - prev)
        covered = np.zeros(d.shape, bool)
        move: dict[int, float] = {}
        from .masks import PATCH
        for tid, tr in self.tracker.tracks.items():
            x0, y0, x1, y1 = (int(v // PATCH) for v in tr.box)
            sl = (slice(max(0, y0), max(y0 + 1, y1 + 1)), slice(max(0, x0), max(x0 + 1, x1 + 1)))
            covered[sl] = True
            move[tid] = float(d[sl].mean()) if d[sl].size else 0.0
        outside = d[~covered]
        new_thing = bool(outside.size) and float(np.percentile(outside, 99.5)) >= 4 * NEW_THING and i % 3 == 0
        loud = float(self.audio.loudness_db(np.array([t]))[0])
        saliency = float(np.clip(d.mean() / 8.0 + (loud + 60.0) / 60.0 * 0.5, 0.0, 1.0))
        return saliency, new_thing, move

    def _speech_onset(self, t: float) -> bool:
        """Speech starts around now (the glance measures mouths at once then)."""
        p = self.audio.speech(np.array([t - 0.1, t]))
        return bool(p[0] < 0.5 <= p[1])

    # --- results ----------------------------------------------------------------------

    def _ready(self, *, final: bool) -> list[Perception]:
        out = []
        while self._pending:
            p = self._pending[0]
            horizon = p.t + self.lookahead_s
            if not final and (self._last_t < horizon or self.audio.end_s < horizon + 0.02):
                break
            self._pending.pop(0)
            out.append(self._analyse(p))
        return out

    def _window_start(self, t: float) -> float:
        """Where the sync window starts: the onset of the speech heard now (after a pause of
        PAUSE_S), so that a turn is judged on its own speech and the window grows with the
        turn up to MAX_WINDOW_S; never shorter than WINDOW_S."""
        end = t + self.lookahead_s
        grid = np.arange(end - MAX_WINDOW_S, t + 1e-9, 1.0 / self.fps)
        quiet = self.audio.speech(grid) < 0.5
        need = int(round(PAUSE_S * self.fps))
        run = 0
        for k in range(len(grid) - 1, -1, -1):
            run = run + 1 if quiet[k] else 0
            if run >= need:
                start = grid[k] + (need - 2) / self.fps  # the pause's end, a little before the onset
                return float(min(start, end - WINDOW_S))
        return end - MAX_WINDOW_S

    def _frames_between(self, t0: float, t1: float) -> list[int]:
        return [k for k, tk in self._times.items() if t0 <= tk <= t1]

    def _analyse(self, p: _Pending) -> Perception:
        win = self._frames_between(self._window_start(p.t), p.t + self.lookahead_s)
        times = np.array([self._times[k] for k in win])
        loud = self.audio.loudness_db(times)
        hang = self.audio.speech(np.arange(p.t - SPEECH_HANGOVER_S[0], p.t + SPEECH_HANGOVER_S[1] + 1e-9, 0.032))
        speech_now = float(hang.max()) if len(hang) else 0.0
        scores: dict[int, float] = {}
        for tid, _, _, _ in p.faces:
            tr = self.tracker.tracks.get(tid)
            series = mouth_series(tr.mouth, win[0], win[-1]) if tr is not None and win else None
            if series is None or len(series) != len(win):
                scores[tid] = 0.0
                continue
            scores[tid] = score(sync(series, loud), speech_now)
        speaker = self.chooser.choose(scores)
        faces = tuple(FaceObservation(
            id=tid, box=tuple(round(v, 1) for v in box), speaking=round(scores.get(tid, 0.0), 3),  # type: ignore[arg-type]
            mouth=round(m.mouth, 4) if m else 0.0, looking=m.looking if m else None,
            yaw=round(m.yaw, 1) if m else 0.0, pitch=round(m.pitch, 1) if m else 0.0, fresh=fresh)
            for tid, box, m, fresh in p.faces)
        mask, kind = self._mask(p, speaker, loud, win)
        ev = tuple(self.events.update(p.t, faces, speaker))
        for k in [k for k in self._times if k < p.index - (MAX_WINDOW_S + 2) * self.fps]:  # bounded memory
            del self._times[k]
            for tr in self.tracker.tracks.values():
                tr.mouth.pop(k, None)
        return Perception(t=p.t, index=p.index, faces=faces, speaker=speaker, mask=mask, mask_kind=kind,
                          speech=round(speech_now, 3), saliency=round(p.saliency, 3),
                          analysed=any(f[3] for f in p.faces), events=ev)

    def _mask(self, p: _Pending, speaker: int | None, loud: np.ndarray, win: list[int]) -> tuple[np.ndarray | None, str | None]:
        if not self.masks:
            return None, None
        h, w = p.rgb.shape[:2]
        boxes = {tid: box for tid, box, _, _ in p.faces}
        if speaker is not None and speaker in boxes and self.segmenter is not None:
            box = boxes[speaker]
            last = self._last_seg
            if not self.glance or last is None or p.index - last[0] >= SEGMENT_EVERY or last[1].shape != (h, w):
                self.counters["segmenter_calls"] += 1
                prob = self.segmenter(p.rgb)
                self._last_seg = (p.index, prob, box)
            else:  # the last mask, moved with the face
                prob = _shift(last[1], box[0] - last[2][0], box[1] - last[2][1])
            others = [b for tid, b in boxes.items() if tid != speaker]
            m = person_of(prob, box, others)
            return (m, "face") if (m >= 0.5).any() else (None, None)
        # no face speaks: something else may, if its motion follows the sound (speech off
        # screen moves nothing on screen in step with it)
        motion = self.motion.mask(win, loud, list(boxes.values()), (h, w))
        return (motion, "motion") if motion is not None else (None, None)


def _shift(a: np.ndarray, dx: float, dy: float) -> np.ndarray:
    dx, dy = int(round(dx)), int(round(dy))
    out = np.zeros_like(a)
    h, w = a.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out
