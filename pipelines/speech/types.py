"""What speech synthesis hands to the rest of the engine."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The engine's canonical phoneme set is ARPAbet (CMU dictionary, stress digits removed),
# upper case, plus "SIL" for silence/pauses. Every TTS backend maps its own symbols onto it,
# so the viseme function and the audio-to-motion training targets see one alphabet.
ARPABET: frozenset[str] = frozenset(
    """AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH
    UH UW V W Y Z ZH SIL""".split()
)


@dataclass(frozen=True, slots=True)
class Phoneme:
    symbol: str  # ARPAbet, see ARPABET
    start_ms: float  # from the start of the utterance's audio
    end_ms: float


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    char_start: int  # offsets into the utterance text
    char_end: int
    start_ms: float
    end_ms: float


@dataclass(slots=True)
class Utterance:
    """One synthesized sentence: audio plus its timeline, all times from the audio's start."""

    text: str
    audio: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    phonemes: list[Phoneme] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    # Where `text` starts in the text given to SpeechSynthesizer.stream(); Word offsets are
    # already in that text's coordinates (0 for a single synthesize() call).
    char_offset: int = 0
    # How the timeline was obtained: "espeak" (exact, from the synthesizer), "pocketsphinx"
    # (forced alignment), "pocketsphinx-words" (aligned words, phonemes spread inside them),
    # "dtw" or "proportional" (fallbacks, coarser).
    timing: str = ""
    # A streamed sentence: `audio` is its beginning, `pending` samples are still being
    # synthesized (the timeline already covers them), `rest` is the engine's handle to them.
    pending: int = 0
    rest: object | None = None

    @property
    def total_samples(self) -> int:
        return len(self.audio) + self.pending

    @property
    def duration_ms(self) -> float:
        return 1000.0 * self.total_samples / self.sample_rate
