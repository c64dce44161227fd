"""Claim: the mouth motion made from phonemes and the idle life of the avatar move as
docs/motion-parameters.md says, at its numbers: coarticulation, anticipation, bilabial and
labiodental closures, rest in silence; blinks, breathing, head sway and seeding."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.motion.idle import IdleMotion
from pipelines.motion.params import IDLE, MOUTH, PARAM_NAMES
from pipelines.motion.visemes import mouth_params
from pipelines.speech.types import Phoneme

FPS = 25
FRAME_S = 1 / FPS  # one video frame: the tolerance where frame sampling hides the exact instant
MS = 0.001

MOUTH_COL = {name: i for i, name in enumerate(PARAM_NAMES[MOUTH])}
IDLE_COL = {name: i for i, name in enumerate(PARAM_NAMES[IDLE])}

# Documented targets (docs/motion-parameters.md table: oo rounds, ee spreads, a wide "aa"
# opens the jaw); the weak consonants' own shapes are "closed-ish, neutral".
VOWEL_SHAPE = {"UW": ("lip_round", 0.95), "IY": ("lip_spread", 0.7), "AA": ("jaw_open", 0.85)}


def P(symbol: str, start_ms: float, end_ms: float) -> Phoneme:
    return Phoneme(symbol, start_ms, end_ms)


def mouth_at(phonemes: list[Phoneme], times_s: np.ndarray | list[float]) -> np.ndarray:
    """The mouth parameters at arbitrary instants (the viseme function's `times=` query)."""
    return mouth_params(phonemes, 0, FPS, times=np.asarray(times_s, dtype=np.float64))


def share_towards(value: float, own: float, other: float) -> float:
    """How far `value` went from `own` towards `other`: 0 = own shape kept, 1 = other's taken."""
    return (value - own) / (other - own)


# -- the viseme function: coarticulation ------------------------------------------------------

@pytest.mark.parametrize("weak", ["T", "D", "K", "G", "HH"])
@pytest.mark.parametrize("vowel", ["UW", "IY", "AA"])
def test_weak_consonants_take_their_neighbours_shape(weak: str, vowel: str) -> None:
    """A t, d, k, g or h between two vowels is hardly seen: at its own acoustic centre the
    mouth is most of the way to the vowels' shape; a full-strength consonant (s) in the same
    place keeps visibly more of its own."""
    name, target = VOWEL_SHAPE[vowel]
    col = MOUTH_COL[name]
    for dur in (40, 60, 100):
        def value_at_centre(consonant: str) -> float:
            seq = [P(vowel, 0, 200), P(consonant, 200, 200 + dur), P(vowel, 200 + dur, 400 + dur)]
            return float(mouth_at(seq, [(200 + dur / 2) * MS])[0, col])

        # the consonant's own shape: what the mouth shows when it is said alone, held long
        own_weak = float(mouth_at([P(weak, 0, 2000)], [1.0])[0, col])
        own_s = float(mouth_at([P("S", 0, 2000)], [1.0])[0, col])
        weak_share = share_towards(value_at_centre(weak), own_weak, target)
        s_share = share_towards(value_at_centre("S"), own_s, target)
        assert weak_share >= 0.75, (weak, vowel, dur, weak_share)
        assert weak_share > s_share + 0.1, (weak, vowel, dur, weak_share, s_share)


@pytest.mark.parametrize("vowel", ["UW", "IY", "AA"])
def test_vowels_dominate_consonants(vowel: str) -> None:
    """Same durations, mirrored contexts: a vowel between two s's keeps most of its shape,
    while an s between two of that vowel gives most of its shape away."""
    name, target = VOWEL_SHAPE[vowel]
    col = MOUTH_COL[name]
    own_s = float(mouth_at([P("S", 0, 2000)], [1.0])[0, col])
    for dur in (60, 100):
        v_between_s = [P("S", 0, 200), P(vowel, 200, 200 + dur), P("S", 200 + dur, 400 + dur)]
        s_between_v = [P(vowel, 0, 200), P("S", 200, 200 + dur), P(vowel, 200 + dur, 400 + dur)]
        centre = [(200 + dur / 2) * MS]
        vowel_kept = 1 - share_towards(float(mouth_at(v_between_s, centre)[0, col]), target, own_s)
        s_kept = 1 - share_towards(float(mouth_at(s_between_v, centre)[0, col]), own_s, target)
        assert vowel_kept >= 0.7, (vowel, dur, vowel_kept)
        assert s_kept <= 0.5, (vowel, dur, s_kept)


# -- the viseme function: anticipation --------------------------------------------------------

def test_influence_reaches_100ms_ahead_and_60ms_behind_peaking_20ms_before_the_sound() -> None:
    """A short "oo" (10 ms, 700-710 ms) inside one long "ah" that spans the whole window: the
    ah's dominance is 1 everywhere there (its flat core covers every sample), so the output
    lip_round = 0.95 * d / (1 + d) gives the oo's dominance d(t) directly. Its influence falls
    to 1/e of its peak ~100 ms before its centre and ~60 ms after it (plus the 6 ms flat core
    of a 10 ms phoneme), and its peak sits 20 ms before the acoustic centre (705 ms)."""
    t = np.arange(0.3, 1.2, 0.5 * MS)
    seq = [P("AH", -5000, 5000), P("UW", 700, 710)]
    w = mouth_at(seq, t)[:, MOUTH_COL["lip_round"]].astype(np.float64) / 0.95
    d = w / (1 - w)
    peak = np.flatnonzero(d >= d.max() - 1e-4)
    target_time = float(t[peak].mean())
    assert target_time == pytest.approx(0.705 - 0.020, abs=2 * MS)

    reached = np.flatnonzero(d >= np.exp(-1) * d.max())
    before = target_time - float(t[reached[0]])
    after = float(t[reached[-1]]) - target_time
    assert before == pytest.approx(0.100, abs=10 * MS), before
    assert after == pytest.approx(0.060, abs=10 * MS), after


@pytest.mark.parametrize("dur", [10, 40, 80, 120])
def test_lips_move_ahead_of_the_sound_in_running_speech(dur: int) -> None:
    """"ah oo ah": the rounding for the oo is more than half-way there when the oo starts
    to be heard, peaks at least 20 ms before its acoustic centre, and builds up over a longer
    stretch before the oo than it lingers after it (100 ms reach ahead vs 60 ms behind)."""
    s, e = 700, 700 + dur
    t = np.arange(0.3, 1.2, 0.5 * MS)
    r = mouth_at([P("AH", 0, s), P("UW", s, e), P("AH", e, 1500)], t)[:, MOUTH_COL["lip_round"]]
    peak = float(r.max())
    at_onset = float(r[np.argmin(np.abs(t - s * MS))])
    assert at_onset > 0.5 * peak
    acoustic_centre = (s + e) / 2 * MS
    assert acoustic_centre - float(t[int(r.argmax())]) >= 0.020 - 0.5 * MS
    centre = acoustic_centre - 0.020
    above = np.flatnonzero(r > 0.25 * peak)
    ahead, behind = centre - float(t[above[0]]), float(t[above[-1]]) - centre
    assert ahead >= 1.25 * behind, (ahead, behind)


# -- the viseme function: bilabials and labiodentals ------------------------------------------

@pytest.mark.parametrize("consonant,gesture,other", [
    ("P", "lip_press", "lip_tuck"), ("B", "lip_press", "lip_tuck"), ("M", "lip_press", "lip_tuck"),
    ("F", "lip_tuck", "lip_press"), ("V", "lip_tuck", "lip_press"),
])
@pytest.mark.parametrize("neighbour", ["AA", "UW", "IY", "SIL"])
def test_closure_is_complete_over_the_consonant_with_60ms_in_and_40ms_out(
        consonant: str, gesture: str, other: str, neighbour: str) -> None:
    """p, b, m press the lips (f, v tuck the lower lip) to exactly 1 over their closure (from
    the consonant's start to its release, the last 15 ms, which belongs to the next sound),
    whatever the neighbours; the gesture starts 60 ms before the consonant and is gone 40 ms
    after the closure; the other lip gesture stays 0; the jaw is held nearly closed."""
    s, e = 400, 520
    seq = [P(neighbour, 0, s), P(consonant, s, e), P(neighbour, e, 900)]
    t = np.arange(0.0, 0.9, 0.5 * MS)
    m = mouth_at(seq, t)
    g = m[:, MOUTH_COL[gesture]]
    closure = (t >= s * MS) & (t <= (e - 15) * MS)
    assert np.all(g[closure] == 1.0)
    moving = np.flatnonzero(g > 0)
    assert t[moving[0]] == pytest.approx((s - 60) * MS, abs=1 * MS)  # starts 60 ms ahead
    assert t[moving[-1]] == pytest.approx((e - 15 + 40) * MS, abs=1 * MS)  # 40 ms ramp out
    assert np.all(m[:, MOUTH_COL[other]] == 0.0)
    assert float(m[closure, MOUTH_COL["jaw_open"]].max()) <= 0.2  # vs 0.85 for a wide aa


def test_bilabial_closure_in_video_frames() -> None:
    """At 25 fps (frames sampled at the middle of their interval) every frame within the
    closure shows the lips fully pressed, and the first pressing frame comes at most one
    frame after the documented start, 60 ms before the consonant: one frame of tolerance,
    since no frame need fall exactly on that instant."""
    s, e = 400, 520
    seq = [P("AA", 0, s), P("M", s, e), P("AA", e, 900)]
    n = 23
    times = (np.arange(n) + 0.5) / FPS
    press = mouth_params(seq, n, FPS)[:, MOUTH_COL["lip_press"]]
    closure = (times >= s * MS) & (times <= (e - 15) * MS)
    assert closure.sum() >= 2 and np.all(press[closure] == 1.0)
    first = times[np.flatnonzero(press > 0)[0]]
    assert (s - 60) * MS < first <= (s - 60) * MS + FRAME_S
    assert np.all(press[times <= (s - 60) * MS] == 0.0)
    assert np.all(press[times >= (e - 15 + 40) * MS] == 0.0)


# -- the viseme function: silence -------------------------------------------------------------

def test_silence_returns_the_mouth_to_rest() -> None:
    """After speech, and in a pause within it, SIL brings every mouth parameter back to 0,
    the rest pose; no phonemes at all is the rest pose throughout. (Silences of 1 s; for
    longer ones see the xfail test below.)"""
    n = 35  # 1.4 s
    times = (np.arange(n) + 0.5) / FPS
    after = [P("AA", 0, 150), P("M", 150, 230), P("UW", 230, 400), P("SIL", 400, 1400)]
    m = mouth_params(after, n, FPS)
    assert float(m[times < 0.4].max()) > 0.5  # it did speak
    assert float(np.abs(m[times >= 0.6]).max()) < 0.01  # 200 ms into the silence: at rest

    pause = [P("AA", 0, 300), P("SIL", 300, 1300), P("IY", 1300, 1600)]
    mid = mouth_at(pause, np.arange(0.6, 1.0, 0.01))
    assert float(np.abs(mid).max()) < 0.01

    assert np.all(mouth_params([], n, FPS) == 0.0)


@pytest.mark.xfail(strict=True, reason="docs/motion-parameters.md: SIL pulls everything back to "
                   "rest; a silence over ~1 s loses its hold near its ends (its dominance core is "
                   "60 % of its half-length, then decays with the 60/100 ms reaches), so the "
                   "mouth drifts open at the end of a trailing silence and takes the next "
                   "vowel's shape early in a long pause")
def test_long_silence_stays_at_rest() -> None:
    """A 2 s silence, trailing or a pause: from 200 ms after the speech to its end, or to
    200 ms before the next phoneme starts (330 ms before that one's articulatory centre, far
    beyond the documented 100 ms reach), the mouth is at rest. Measured now: the jaw opens to
    0.27 in the last 100 ms of the trailing silence, and the lips are fully spread for the
    "ee" 200 ms before it is heard (a 1 s pause: 0.04 there)."""
    n = 60
    times = (np.arange(n) + 0.5) / FPS
    trailing = [P("AA", 0, 150), P("M", 150, 230), P("UW", 230, 400), P("SIL", 400, 2400)]
    m = mouth_params(trailing, n, FPS)
    assert float(np.abs(m[times >= 0.6]).max()) < 0.05

    pause = [P("AA", 0, 300), P("SIL", 300, 2300), P("IY", 2300, 2600)]
    mid = mouth_at(pause, np.arange(0.5, 2.1 + 1e-9, 0.01))
    assert float(np.abs(mid).max()) < 0.05


# -- idle life ---------------------------------------------------------------------------------

def frames(seconds: float) -> np.ndarray:
    return (np.arange(round(seconds * FPS)) + 0.5) / FPS


def blink_onsets(blink: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Times of the frames where the eyes start to close (first frame > 0 after an open one)."""
    closed = blink > 0
    rising = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
    return times[rising]


SEEDS = (0, 1, 2, 3, 4)


def test_blinks_come_every_2_to_6_s_with_12_percent_doubles_320ms_apart() -> None:
    """Over 20 minutes per seed, blinks (a double blink counting as one) start 2-6 s apart and
    use that range; about 12 % of them are double, the second closing 0.32 s after the first.
    Onsets are seen in 25 fps frames, so each gap is known to one frame (40 ms)."""
    times = frames(1200)
    event_gaps: list[float] = []
    double_gaps: list[float] = []
    events = 0
    for seed in SEEDS:
        onsets = blink_onsets(IdleMotion(seed).params(times)[:, IDLE_COL["blink_r"]], times)
        gaps = np.diff(onsets)
        second = np.concatenate([[False], gaps < 1.0])  # the second blink of a double
        double_gaps.extend(gaps[gaps < 1.0].tolist())
        event_gaps.extend(np.diff(onsets[~second]).tolist())
        events += int((~second).sum())
    doubles, singles = np.array(double_gaps), np.array(event_gaps)
    assert np.all(np.abs(doubles - 0.32) <= FRAME_S)
    assert np.all((singles >= 2.0 - FRAME_S) & (singles <= 6.0 + FRAME_S))
    assert singles.min() < 2.3 and singles.max() > 5.7  # spread over 2-6 s, not a fixed period
    assert events > 1000
    assert len(doubles) / events == pytest.approx(0.12, abs=0.03)


def test_blinks_close_fully_close_80ms_hold_40ms_open_150ms() -> None:
    """Both eyes close all the way in each blink, as seen in 25 fps frames; on a 1 ms grid
    a blink closes in 80 ms, stays shut 40 ms and opens in 150 ms."""
    times = frames(120)
    p = IdleMotion(7).params(times)
    r, left = p[:, IDLE_COL["blink_r"]], p[:, IDLE_COL["blink_l"]]
    assert np.array_equal(r, left)
    onsets = blink_onsets(r, times)
    assert len(onsets) >= 15
    for t0 in onsets:
        blink = r[(times >= t0) & (times < t0 + 0.27)]
        assert float(blink.max()) >= 0.99

    fine = np.arange(0.0, 10.0, MS)
    b = IdleMotion(7).params(fine)[:, IDLE_COL["blink_r"]]
    start = np.flatnonzero(b > 0)[0]
    run = b[start:start + 300]  # one blink is 270 ms; a double's second starts at 320 ms
    shut = np.flatnonzero(run >= 1.0 - 1e-6)
    assert shut[0] * MS == pytest.approx(0.080, abs=2 * MS)
    assert (shut[-1] - shut[0]) * MS == pytest.approx(0.040, abs=2 * MS)
    assert (np.flatnonzero(run > 0)[-1] - shut[-1]) * MS == pytest.approx(0.150, abs=2 * MS)


@pytest.mark.parametrize("seed", SEEDS)
def test_breathing_at_a_quarter_hertz(seed: int) -> None:
    """The breath parameter goes through one cycle every 4 s (0.25 Hz), measured from its
    rising zero crossings over two minutes of 25 fps frames, and spans -1..1."""
    times = frames(120)
    b = IdleMotion(seed).params(times)[:, IDLE_COL["breath"]].astype(np.float64)
    up = np.flatnonzero((b[:-1] < 0) & (b[1:] >= 0))
    crossings = times[up] - b[up] * (times[up + 1] - times[up]) / (b[up + 1] - b[up])
    periods = np.diff(crossings)
    assert len(periods) >= 28
    assert float(periods.mean()) == pytest.approx(4.0, abs=0.01)
    assert np.all(np.abs(periods - 4.0) < FRAME_S)
    assert b.max() > 0.99 and b.min() < -0.99


@pytest.mark.parametrize("seed", SEEDS)
def test_head_sway_stays_within_the_documented_amplitudes(seed: int) -> None:
    """Idle, the head turns within ±3° yaw, ±2° pitch, ±1.5° roll over 10 minutes and uses
    most of that range; while speaking the sway is livelier (larger)."""
    times = frames(600)
    idle = IdleMotion(seed).params(times)
    talking = IdleMotion(seed).params(times, speaking=np.ones(len(times)))
    for name, amp in (("head_yaw", 3.0), ("head_pitch", 2.0), ("head_roll", 1.5)):
        a = np.abs(idle[:, IDLE_COL[name]])
        assert float(a.max()) <= amp + 1e-5, name
        assert float(a.max()) >= 0.8 * amp, name
        assert float(np.abs(talking[:, IDLE_COL[name]]).max()) > float(a.max()) * 1.2, name


def test_same_seed_same_motion_different_seeds_differ() -> None:
    """One seed gives the same idle motion however it is queried (at once or in 1 s runs, as
    a live session does); another seed gives other blinks and another sway."""
    times = frames(60)
    whole = IdleMotion(3).params(times)
    again = IdleMotion(3).params(times)
    live = IdleMotion(3)
    chunked = np.concatenate([live.params(times[i:i + FPS]) for i in range(0, len(times), FPS)])
    assert np.array_equal(whole, again)
    assert np.array_equal(whole, chunked)

    other = IdleMotion(4).params(times)
    for name in ("head_yaw", "head_pitch", "head_roll", "brow_raise", "breath"):
        assert not np.allclose(whole[:, IDLE_COL[name]], other[:, IDLE_COL[name]]), name
    onsets_3 = blink_onsets(whole[:, IDLE_COL["blink_r"]], times)
    onsets_4 = blink_onsets(other[:, IDLE_COL["blink_r"]], times)
    assert len(onsets_3) != len(onsets_4) or not np.allclose(onsets_3, onsets_4)


@pytest.mark.parametrize("seed", SEEDS)
def test_gaze_rests_mostly_at_the_camera_and_jumps_in_saccades(seed: int) -> None:
    """The eyes hold fixations (0.4-2.5 s), most of the time at the camera, and move between
    them within two frames (a saccade), never beyond the documented range."""
    times = frames(120)
    g = IdleMotion(seed).params(times)[:, [IDLE_COL["gaze_x"], IDLE_COL["gaze_y"]]]
    assert np.abs(g).max() <= 1.0
    at_camera = np.hypot(g[:, 0], g[:, 1]) < 0.15
    assert 0.5 <= at_camera.mean() <= 0.9, at_camera.mean()
    step = np.hypot(*np.diff(g, axis=0).T)
    moving = step > 0.02
    assert 120 / 2.5 <= (np.diff(moving.astype(int)) == 1).sum() <= 120 / 0.4 + 1  # saccades per 2 min
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, moving.astype(int), 0])))[::2]  # lengths of moving runs
    assert runs.max() <= 2, runs.max()


def test_brows_lift_on_a_stressed_syllable_and_not_in_silence() -> None:
    """SpeechAccent: syllables at a steady opening barely move the brows; one that opens the
    jaw much more than its neighbours (a stressed one) lifts them; silence leaves them at rest."""
    from pipelines.motion.idle import SpeechAccent

    t = np.arange(0, 4, 1 / FPS)
    syllables = 0.3 * np.clip(np.sin(2 * np.pi * 4 * t), 0, None)  # 4 syllables a second
    stressed = syllables.copy()
    stressed[(t > 2.0) & (t < 2.25)] *= 3.0  # one stressed syllable at 2 s
    acc, plain = SpeechAccent(), SpeechAccent()
    lift = np.array([acc.step(j) for j in stressed])
    flat = np.array([plain.step(j) for j in syllables])
    assert lift[(t > 2.0) & (t < 2.5)].max() >= 0.2
    assert flat[t > 1.0].max() < 0.5 * lift.max()
    silence = SpeechAccent()
    assert max(silence.step(0.0) for _ in range(50)) == 0.0


def test_the_tongue_tip_shows_on_th_and_l_only() -> None:
    """tongue_params: 1 over a th / dh, half that over an l, nothing on other sounds."""
    from pipelines.motion.visemes import tongue_params

    phs = [Phoneme("SIL", 0, 200), Phoneme("DH", 200, 300), Phoneme("AH", 300, 450), Phoneme("L", 450, 550),
           Phoneme("IY", 550, 700), Phoneme("S", 700, 800), Phoneme("SIL", 800, 1000)]
    t = np.array([0.1, 0.25, 0.375, 0.5, 0.625, 0.75, 0.9])
    tip = tongue_params(phs, len(t), FPS, times=t)
    assert tip[1] == pytest.approx(1.0) and tip[3] == pytest.approx(0.5)
    assert tip[0] == tip[2] == tip[4] == tip[5] == tip[6] == 0.0
