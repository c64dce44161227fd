"""Claim: the audio front end hears what a caller says — any file rate and layout resampled to
16 kHz without drift or artefacts, damaged files decoded as far as they go, silero VAD finding
speech in noise at 10 dB SNR and staying quiet without speech, log-mel features streamed
chunk by chunk equal to the whole signal's.

Speech comes from the project's own TTS (espeak-ng, exact phoneme timeline), so reference
onsets are known to the millisecond; noise is white or pink at 10 dB SNR over the speech.
`python tests/test_audio_frontend.py` prints the figures quoted in docs/audio.md.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import tempfile
import time
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from scipy.signal import resample_poly

from engines import configure_torch_threads
from pipelines.audio.features import HOP, StreamingLogMel, log_mel
from pipelines.audio.loading import AudioFileError, load_audio
from pipelines.audio.resample import StreamingResampler
from pipelines.audio.stages import DetectVoice, FeatureFrame, Features, Resample
from pipelines.audio.vad import StreamingVad, VadEvent, load_silero
from realtime import AudioFrame, Event, Frame, Graph, LatePolicy, MapStage, Session, Stage, StageContext

SR = 16000
log = logging.getLogger(__name__)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> None:
    # What the CLI and server do (engines/threads.py). With the default of one thread per
    # core, silero took ~100 ms per 32 ms window on this 2-core box while another process
    # was busy, instead of ~0.5 ms.
    configure_torch_threads(1)


# -- signals ---------------------------------------------------------------------------------
def sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n)


def resample_whole(x: np.ndarray, rate: int, channels: int = 1) -> np.ndarray:
    r = StreamingResampler(rate, channels)
    return np.concatenate([r.push(x), r.flush()])


def push_random(r: StreamingResampler, x: np.ndarray, rng: np.random.Generator,
                hi: int = 3000) -> np.ndarray:
    out, pos = [], 0
    while pos < len(x):
        n = int(rng.integers(1, hi))
        out.append(r.push(x[pos:pos + n]))
        pos += n
    out.append(r.flush())
    return np.concatenate(out)


def peak_hz(y: np.ndarray, rate: int = SR) -> float:
    y = y[rate // 10:-rate // 10]  # away from the filter edges
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spec) * rate / len(y))


@dataclass
class Scene:
    clean: np.ndarray  # 16 kHz
    onsets: list[float]  # seconds: first non-SIL phoneme of each sentence
    offsets: list[float]  # seconds: end of the last non-SIL phoneme
    mask: np.ndarray  # True over the speech parts (onset..offset)

    def noisy(self, kind: str, snr_db: float = 10.0, seed: int = 1) -> np.ndarray:
        rng = np.random.default_rng(seed)
        n = len(self.clean)
        noise = rng.standard_normal(n) if kind == "white" else pink(n, rng)
        p_speech = np.mean(self.clean[self.mask].astype(np.float64) ** 2)
        noise *= np.sqrt(p_speech / np.mean(noise ** 2) / 10 ** (snr_db / 10))
        return (self.clean + noise).astype(np.float32)


def build_scene() -> Scene:
    """1 s silence, sentence, 1.5 s silence, sentence, 1 s silence (espeak en-us)."""
    from pipelines.speech.tts import SpeechSynthesizer
    tts = SpeechSynthesizer("en-us")
    parts: list[np.ndarray] = [np.zeros(SR, np.float32)]  # 1 s silence
    onsets, offsets = [], []
    t = 1.0
    for k, text in enumerate(["The quick brown fox jumps over the lazy dog.",
                              "She sells sea shells by the sea shore every morning."]):
        utt = tts.synthesize(text)
        spoken = [p for p in utt.phonemes if p.symbol != "SIL"]
        onsets.append(t + spoken[0].start_ms / 1000)
        offsets.append(t + spoken[-1].end_ms / 1000)
        audio = resample_whole(utt.audio, utt.sample_rate)
        gap = np.zeros(int(SR * (1.5 if k == 0 else 1.0)), np.float32)
        parts += [audio, gap]
        t += (len(audio) + len(gap)) / SR
    clean = np.concatenate(parts)
    mask = np.zeros(len(clean), bool)
    for a, b in zip(onsets, offsets):
        mask[int(a * SR):int(b * SR)] = True
    return Scene(clean, onsets, offsets, mask)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return build_scene()


@pytest.fixture(scope="module")
def silero() -> Any:
    return load_silero()  # one model for the module; every detector resets its state


# -- resampler -------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 2])
def test_resampler_length_does_not_drift(rate: int, channels: int) -> None:
    rng = np.random.default_rng(rate + channels)
    n = int(rate * 3.3) + 7
    x = (rng.standard_normal((n, channels)) * 0.1).astype(np.float32).squeeze()
    out = push_random(StreamingResampler(rate, channels), x, rng)
    assert abs(len(out) - n * SR / rate) <= 2
    assert out.dtype == np.float32 and out.ndim == 1


@pytest.mark.parametrize("rate", [44100, 48000, 8000, 96000])
def test_resampler_keeps_a_1khz_sine(rate: int) -> None:
    y = push_random(StreamingResampler(rate, 1), sine(1000, rate, 1.0), np.random.default_rng(0))
    assert abs(peak_hz(y) - 1000) <= 2
    rms = np.sqrt(np.mean(y[SR // 10:-SR // 10] ** 2))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_chunks_give_the_samples_of_the_whole_signal() -> None:
    x = (np.random.default_rng(3).standard_normal((44100 * 2, 2)) * 0.2).astype(np.float32)
    whole = resample_whole(x, 44100, 2)
    chunked = push_random(StreamingResampler(44100, 2), x, np.random.default_rng(4))
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_stereo_is_averaged_and_int16_scaled() -> None:
    s = sine(1000, 48000, 1.0, amp=0.8)
    left_only = resample_whole(np.stack([s, np.zeros_like(s)], 1), 48000, 2)
    mono = resample_whole(s, 48000)
    np.testing.assert_allclose(left_only, 0.5 * mono, atol=1e-5)
    opposite = resample_whole(np.stack([s, -s], 1), 48000, 2)
    assert np.abs(opposite).max() < 1e-6
    as_int16 = np.round(s * 32768).clip(-32768, 32767).astype(np.int16)
    np.testing.assert_allclose(resample_whole(as_int16, 48000), mono, atol=1e-4)
    interleaved = resample_whole(np.stack([as_int16, as_int16], 1).reshape(-1), 48000, 2)
    np.testing.assert_allclose(interleaved, mono, atol=1e-4)


def test_resampler_sanitises_input() -> None:
    x = sine(300, 44100, 1.0, amp=3.0) + 0.4  # clipped and with a DC offset
    x[::1000] = np.nan
    x[5::1000] = np.inf
    r = StreamingResampler(44100, 1)
    y = np.concatenate([r.push(x), r.flush()])
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert r.stats.nonfinite == 2 * len(x[::1000])
    assert 0.5 < r.stats.clipped_fraction < 0.9
    dc = resample_whole(np.full(44100, 0.5, np.float32), 44100)
    assert abs(dc[SR // 2:].mean()) < 1e-3 and np.abs(dc).max() < 1e-3  # no step at the start


def test_resampler_rejects_what_it_cannot_take() -> None:
    with pytest.raises(ValueError):
        StreamingResampler(4000, 1)
    with pytest.raises(ValueError):
        StreamingResampler(44100, 2).push(np.zeros((10, 3), np.float32))
    with pytest.raises(TypeError):
        StreamingResampler(44100, 1).push(np.array(["a"]))


# -- features --------------------------------------------------------------------------------
def test_streaming_log_mel_matches_the_whole_signal() -> None:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(SR * 2 + 123) * 0.1).astype(np.float32)
    mel, frames, pos = StreamingLogMel(), [], 0
    while pos < len(x):
        n = int(rng.integers(1, 700))
        frames.append(mel.push(x[pos:pos + n]))
        pos += n
    got = np.concatenate(frames)
    want = log_mel(x)
    assert got.shape == want.shape == ((len(x) - 400) // HOP + 1, 80)
    assert np.allclose(got, want, atol=1e-4)


# -- loading ---------------------------------------------------------------------------------
def write_wav(path: Path, x: np.ndarray, rate: int) -> Path:
    """int16 (n, ch) through the stdlib writer."""
    x = x.reshape(len(x), -1)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(x.shape[1])
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(x.astype("<i2").tobytes())
    return path


def encode(path: Path, fmt: str, codec: str, x: np.ndarray, rate: int, out_rate: int) -> Path:
    """float32 (n, 2) through a libav encoder (which converts rate and sample format)."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=out_rate, layout="stereo")
        for i in range(0, len(x), 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[i:i + 1024]).reshape(1, -1),
                                           format="flt", layout="stereo")
            f.sample_rate, f.pts = rate, i
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


@pytest.mark.parametrize("ext,fmt,codec,rate", [
    ("flac", "flac", "flac", 44100), ("mp3", "mp3", "libmp3lame", 44100),
    ("ogg", "ogg", "libopus", 48000), ("m4a", "mp4", "aac", 44100),
    ("wav", "wav", "pcm_f32le", 22050)])
def test_load_compressed_formats(tmp_path: Path, ext: str, fmt: str, codec: str, rate: int) -> None:
    s = sine(1000, 44100, 1.5)
    path = encode(tmp_path / f"a.{ext}", fmt, codec, np.stack([s, s], 1), 44100, rate)
    y, info = load_audio(path)
    assert (info.sample_rate, info.channels) == (rate, 2)
    # m4a keeps AAC's encoder priming (~23 ms); the others are exact to a frame
    assert info.duration_s == pytest.approx(1.5, abs=0.03)
    assert len(y) == pytest.approx(1.5 * SR, abs=0.03 * SR)
    assert abs(peak_hz(y) - 1000) <= 2 and not info.damaged


def test_load_wav_reports_nan_and_clipping(tmp_path: Path) -> None:
    x = sine(440, 16000, 1.0)
    x[:1600] = 1.0  # 10 % at full scale
    x[2000:2010] = np.nan
    path = encode(tmp_path / "f.wav", "wav", "pcm_f32le", np.stack([x, x], 1), 16000, 16000)
    y, info = load_audio(path)
    assert info.nan_count == 20 and np.isfinite(y).all()
    assert info.clipped_fraction == pytest.approx(0.1, abs=0.005)
    assert info.codec == "pcm_f32le" and len(y) == SR


@pytest.mark.timeout(20)
def test_damaged_wavs_decode_what_is_there(tmp_path: Path) -> None:
    x = (np.random.default_rng(6).standard_normal((44100, 2)) * 3000).astype(np.int16)
    good = write_wav(tmp_path / "good.wav", x, 44100).read_bytes()
    data = good.find(b"data")
    cases = {
        "truncated": good[:len(good) // 2 + 1],  # also cuts a sample in half
        "data size past the end": good[:data + 4] + struct.pack("<I", 0x7FFFFF00) + good[data + 8:],
        "riff size wrong": good[:4] + struct.pack("<I", 0xFFFFFFFF) + good[8:],
        "truncated and lying": (good[:data + 4] + struct.pack("<I", 0x7FFFFF00)
                                + good[data + 8:])[:len(good) // 3],
    }
    for what, blob in cases.items():
        p = tmp_path / "bad.wav"
        p.write_bytes(blob)
        y, info = load_audio(p)
        have = (min(len(blob), len(good)) - data - 8) // 4 / 44100  # whole stereo frames
        assert info.duration_s == pytest.approx(have, abs=0.002), what
        assert len(y) == pytest.approx(have * SR, abs=3), what


def one_line_error(path: Path, **kw: Any) -> str:
    with pytest.raises(AudioFileError) as err:
        load_audio(path, **kw)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    assert "no such file" in one_line_error(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    assert "empty" in one_line_error(tmp_path / "empty.wav")
    (tmp_path / "notes.wav").write_text("this is not audio\n" * 50)
    assert "not a readable audio file" in one_line_error(tmp_path / "notes.wav")
    from PIL import Image
    Image.new("RGB", (32, 32), "red").save(tmp_path / "face.png")
    assert "no audio stream" in one_line_error(tmp_path / "face.png")
    with av.open(str(tmp_path / "video.mkv"), "w") as c:  # video only
        s = c.add_stream("ffv1", rate=5)
        s.width = s.height = 16
        s.pix_fmt = "yuv420p"
        for k in range(2):
            f = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            f.pts = k
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    assert "no audio stream" in one_line_error(tmp_path / "video.mkv")
    header = write_wav(tmp_path / "h.wav", np.zeros((100, 1), np.int16), 16000).read_bytes()[:44]
    (tmp_path / "header_only.wav").write_bytes(header)
    assert "no audio could be decoded" in one_line_error(tmp_path / "header_only.wav")
    long = write_wav(tmp_path / "long.wav", np.zeros((16000 * 3, 1), np.int16), 16000)
    assert "longer than" in one_line_error(long, max_seconds=2)
    assert "directory" in one_line_error(tmp_path)


# -- VAD -------------------------------------------------------------------------------------
def run_vad(vad: StreamingVad, x: np.ndarray, seed: int = 0) -> list[VadEvent]:
    rng, events, pos = np.random.default_rng(seed), [], 0
    while pos < len(x):
        n = int(rng.integers(50, 2500))
        events += vad.push(x[pos:pos + n])
        pos += n
    return events + vad.flush()


def segments(events: list[VadEvent]) -> list[tuple[float, float]]:
    kinds = [e.kind for e in events]
    assert kinds == ["speech_start", "speech_end"] * (len(events) // 2), kinds
    return [(a.time_s, b.time_s) for a, b in zip(events[::2], events[1::2])]


@pytest.mark.parametrize("noise", ["white", "pink"])
def test_vad_finds_speech_in_noise(scene: Scene, silero: Any, noise: str) -> None:
    vad = StreamingVad(model=silero)
    segs = segments(run_vad(vad, scene.noisy(noise)))
    assert len(segs) == 2, segs
    for (start, end), onset, offset in zip(segs, scene.onsets, scene.offsets):
        log.info("%s: onset error %+.0f ms, offset error %+.0f ms", noise,
                 1000 * (start - onset), 1000 * (end - offset))
        assert abs(start - onset) <= 0.100
        assert offset - 0.3 <= end <= offset + 0.5  # ends lag by design (min_silence_ms)


def test_vad_probabilities_per_window(scene: Scene, silero: Any) -> None:
    vad = StreamingVad(model=silero)
    res = vad.analyse(scene.clean[:SR])  # the leading second of silence
    assert len(res.probabilities) == SR // 512 and res.first_window == 0
    assert res.probabilities.max() < 0.35 and not res.events
    res2 = vad.analyse(scene.clean[SR:2 * SR])
    assert res2.first_window == len(res.probabilities) and res2.probabilities.max() > 0.5


@pytest.mark.parametrize("kind", ["silence", "white", "pink"])
def test_vad_stays_quiet_without_speech(silero: Any, kind: str) -> None:
    rng = np.random.default_rng(7)
    n = 10 * SR
    x = {"silence": np.zeros(n), "white": rng.standard_normal(n) * 0.05,
         "pink": pink(n, rng) * 0.05}[kind].astype(np.float32)
    assert run_vad(StreamingVad(model=silero), x) == []


def test_vad_survives_garbage(silero: Any) -> None:
    x = np.zeros(6 * SR, np.float32)
    x[SR:] += 0.3  # a DC offset appearing after a second
    x[3 * SR:4 * SR] = 1.7  # a clipped stretch
    x[::777] = np.nan
    x[5::999] = np.inf
    x[7::999] = -np.inf
    assert run_vad(StreamingVad(model=silero), x) == []
    r = StreamingResampler(44100, 1)
    y = push_random(r, resample_poly(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), 441, 160)
                    .astype(np.float32), np.random.default_rng(8))
    assert np.isfinite(y).all()
    assert run_vad(StreamingVad(model=silero), y) == []


# -- stages in a graph -----------------------------------------------------------------------
class WavSource(Stage):
    """Emits a wav's int16 samples in 20 ms AudioFrames, as a capture device would."""

    inputs = ()

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path

    async def run(self, ctx: StageContext) -> None:
        with wave.open(str(self.path), "rb") as f:
            rate, ch = f.getframerate(), f.getnchannels()
            x = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, ch)
        step = rate // 50
        for i in range(0, len(x), step):
            await ctx.output().put(AudioFrame(pts=i, time_base=Fraction(1, rate),
                                              samples=x[i:i + step], sample_rate=rate,
                                              **ctx.stamp(i / rate)))


class Tap(MapStage):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.seen: list[AudioFrame] = []

    async def process(self, frame: AudioFrame, ctx: StageContext):  # type: ignore[override]
        self.seen.append(frame)
        yield frame


class Collect(Stage):
    outputs = ()

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.got: list[Frame] = []

    async def run(self, ctx: StageContext) -> None:
        async for f in ctx.input():
            self.got.append(f)


def scene_wav(scene: Scene, path: Path) -> Path:
    """The noisy scene as a 44.1 kHz stereo int16 wav, right channel a little quieter."""
    x44 = np.clip(resample_poly(scene.noisy("white"), 441, 160), -1, 1)
    stereo = np.stack([x44, 0.8 * x44], 1)
    return write_wav(path, np.round(stereo * 32767).astype(np.int16), 44100)


def front_end_graph(path: Path) -> tuple[Graph, Tap, Collect]:
    tap, sink = Tap("tap"), Collect("sink")
    g = Graph("audio_front")
    g.add(WavSource("src", path), Resample("resample"), tap, DetectVoice("vad"),
          Features("features"), sink)
    for a, b in [("src", "resample"), ("resample", "tap"), ("tap", "vad"), ("vad", "features"),
                 ("features", "sink")]:
        g.link(f"{a}.out", f"{b}.in", capacity=4, policy=LatePolicy.BLOCK)
    return g, tap, sink


def test_stages_in_a_graph(scene: Scene, tmp_path: Path) -> None:
    path = scene_wav(scene, tmp_path / "scene.wav")
    g, tap, sink = front_end_graph(path)
    events: list[Event] = []
    asyncio.run(Session(g, paced=False, on_event=events.append).run())

    # audio: contiguous 16 kHz pts, the samples of the whole file resampled at once
    with wave.open(str(path), "rb") as f:
        raw = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, 2)
    reference = resample_whole(raw, 44100, 2)
    audio = np.concatenate([fr.samples for fr in tap.seen])
    assert [fr.pts for fr in tap.seen] == list(np.cumsum([0] + [len(fr.samples) for fr in tap.seen[:-1]]))
    assert all(fr.sample_rate == SR and fr.time_base == Fraction(1, SR) for fr in tap.seen)
    np.testing.assert_allclose(audio, reference, atol=1e-6)

    # features: one FeatureFrame per 20 ms, equal to log_mel of the whole resampled signal
    feats = [f for f in sink.got if isinstance(f, FeatureFrame)]
    assert all(len(f.features) == 2 for f in feats[:-1])
    assert [f.pts for f in feats] == list(range(0, 2 * len(feats), 2))
    assert all(f.time_base == Fraction(1, 100) for f in feats)
    assert np.allclose(np.concatenate([f.features for f in feats]), log_mel(reference), atol=1e-4)

    # VAD events: two speech segments, onsets near the TTS timeline
    vad = [e.data for e in events if e.kind == "vad"]
    assert [v["kind"] for v in vad] == ["speech_start", "speech_end"] * 2, vad
    for v, onset in zip(vad[::2], scene.onsets):
        assert abs(v["time"] - onset) <= 0.100


# -- figures for docs/audio.md ---------------------------------------------------------------
def _measure() -> None:  # pragma: no cover - run by hand
    configure_torch_threads(1)
    x = (np.random.default_rng(0).standard_normal((44100 * 10, 2)) * 0.1).astype(np.float32)
    for chunk in (882, 44100 * 10):
        r = StreamingResampler(44100, 2)
        t0 = time.perf_counter()
        for i in range(0, len(x), chunk):
            r.push(x[i:i + chunk])
        r.flush()
        dt = time.perf_counter() - t0
        print(f"resampler 44.1k stereo, chunks of {chunk}: {10 / dt:.0f}x real time, "
              f"{1e6 * dt / (len(x) / chunk):.0f} us per chunk")
    y = (np.random.default_rng(1).standard_normal(SR * 20) * 0.1).astype(np.float32)
    vad = StreamingVad()
    vad.push(y[:SR])
    vad.reset()
    t0 = time.perf_counter()
    vad.push(y)
    print(f"silero per 32 ms window: {1e3 * (time.perf_counter() - t0) / vad.windows:.2f} ms")
    mel = StreamingLogMel()
    t0 = time.perf_counter()
    for i in range(0, len(y), 320):
        mel.push(y[i:i + 320])
    print(f"log-mel per 20 ms chunk: {1e6 * (time.perf_counter() - t0) / (len(y) / 320):.0f} us")
    sc = build_scene()
    with tempfile.TemporaryDirectory() as tmp:
        path = scene_wav(sc, Path(tmp) / "scene.wav")
        for _ in range(3):
            g, tap, _sink = front_end_graph(path)
            t0 = time.perf_counter()
            asyncio.run(Session(g, paced=False).run())
            seconds = sum(f.duration for f in tap.seen)
            print(f"graph resample+vad+features, {seconds:.1f} s of 44.1k stereo, unpaced, "
                  f"with silero load: {time.perf_counter() - t0:.2f} s")
    for noise in ("white", "pink"):
        for seed in range(1, 6):
            ev = run_vad(StreamingVad(), sc.noisy(noise, seed=seed))
            starts = [e.time_s for e in ev if e.kind == "speech_start"]
            ends = [e.time_s for e in ev if e.kind == "speech_end"]
            print(f"{noise} seed {seed}: onset errors (ms)",
                  [round(1000 * (s - o)) for s, o in zip(starts, sc.onsets)],
                  "offset errors (ms)", [round(1000 * (e - o)) for e, o in zip(ends, sc.offsets)],
                  f"{len(starts)} segments")


if __name__ == "__main__":
    _measure()
