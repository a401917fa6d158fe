"""What the endpointer works in and says: 30 ms frames of 16 kHz audio, the adaptive end-of-speech
threshold, and its events (gateway/core/endpoint.py)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from gateway.core.events import EndReason

RATE = 16000
FRAME_MS = 30
FRAME_SAMPLES = RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
RECENT_FRAMES = 50  # the last ~1.5 s of an utterance, for a cut at its quietest frame
SENTENCE_END = tuple(".?!。？！…")
# Prepositions that need their object.
PREPOSITIONS = frozenset("of to in with for on at by from into onto upon than".split())
# Words a sentence almost never ends on: conjunctions, articles, prepositions, possessives. A
# sentence that does end on one ("and so on.") waits the longer silence; one cut after it is not
# ended by a pause ("The birch canoe slid on [pause] the smooth planks").
MID_PHRASE_WORDS = PREPOSITIONS | frozenset("and or but the a an that which because so my your our their its".split())
# What Whisper writes for "to" at the end of a decode: a sentence cannot end on "to", so it
# hears "too." or "two." ("Glue the sheet to [pause] the dark blue background" became "Glue the
# sheet too."). The sound is the same, so the words cannot say the sentence ended; a turn that
# does end on them ("Me too.") waits the longer silence.
SOUNDS_MID_PHRASE = frozenset(("too", "two"))
# A question may end on a preposition or on "that" / "so" ("Where are you from?", "Why is
# that?"): with Whisper's question mark after it, it ends the question. tiny.en wrote that mark
# on 4 of 12 such espeak-ng questions and on none of 6 statements cut after a preposition.
QUESTION_ENDS = PREPOSITIONS | {"that", "so"}


def mid_phrase(text: str) -> bool:
    """Whether the words stop mid-phrase: on a comma or the like, or on a word no sentence ends
    with (an article, a conjunction), whatever mark Whisper put after it ("…over the.": it ends
    a cut-off decode as if it were a sentence), unless it is a question's end ("…from?")."""
    text = text.rstrip()
    if text.endswith((",", ";", ":", "-")):
        return True
    last = text.split()[-1].strip(".?!…。？！\"'").lower() if text else ""
    if text.endswith(("?", "？")) and last in QUESTION_ENDS:
        return False
    return last in MID_PHRASE_WORDS or last in SOUNDS_MID_PHRASE


def ends_sentence(text: str) -> bool:
    """Whether the words end on a sentence's mark (. ? ! and the like)."""
    return text.rstrip().endswith(SENTENCE_END)


def end_threshold_ms(speech_ms: float, last_text: str, lo: int, hi: int, eager: int = 0) -> float:
    text = last_text.rstrip()
    if mid_phrase(text):
        return float(hi)
    if ends_sentence(text):
        return float(eager or lo)
    frac = min(1.0, max(0.0, (speech_ms - 1000.0) / 7000.0))
    return hi - (hi - lo) * frac


class State(enum.Enum):
    IDLE = "idle"
    CANDIDATE = "candidate"
    SPEECH = "speech"


@dataclass(frozen=True)
class Began:
    """An utterance opened at `sample` (its pre-roll included)."""

    sample: int


@dataclass(frozen=True)
class Audio:
    """The open utterance's next audio, from `sample` of the session."""

    sample: int
    pcm: bytes


@dataclass(frozen=True)
class Paused:
    """The trailing silence reached `speculate_ms` at `sample`."""

    sample: int


@dataclass(frozen=True)
class Probe:
    """Ask the end-of-turn model whether the speaker was done at `sample` (a pause)."""

    sample: int


@dataclass(frozen=True)
class WentOn:
    """Speech came back after a pause."""

    sample: int


@dataclass(frozen=True)
class Ended:
    """The open utterance ended; its speech ended at `sample`, which was decided at `decided`.
    `tail_bytes`: on a forced cut, audio at the end that belongs to the next utterance. `cut`:
    on silence after a pause, the session sample its final's audio ends at (the pause)."""

    sample: int
    reason: EndReason
    decided: int
    tail_bytes: int = 0
    cut: int | None = None


Event = Began | Audio | Paused | Probe | WentOn | Ended


def energy(frame: bytes) -> float:
    return float(np.mean(np.abs(np.frombuffer(frame, dtype="<i2"), dtype=np.float64)))
