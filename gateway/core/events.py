"""What a session tells its connection, in no wire format: each protocol adapter turns these
into its own messages (gateway/protocols/)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class EndReason(enum.StrEnum):
    SILENCE = "silence"  # the endpointer heard the speech end (or, with the model, the silence cap)
    MODEL = "model"  # the end-of-turn model heard the turn end
    FINALIZE = "finalize"  # the client asked (finalize, commit, Finalize, stop)
    MAX_LENGTH = "max_length"  # cut at MAX_UTTERANCE_S; the speech goes on in the next one


@dataclass(frozen=True)
class SpeechStarted:
    utt: int
    start: float  # seconds of session audio


@dataclass(frozen=True)
class SpeechStopped:
    utt: int
    end: float
    reason: EndReason


@dataclass(frozen=True)
class Interim:
    utt: int
    rev: int
    text: str
    stable: str  # a prefix of `text` that no later interim of this utterance changes
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Final:
    utt: int
    text: str
    start: float
    end: float
    language: str | None
    words: list[dict[str, Any]] | None  # {word, start, end, prob}, session times
    no_speech: bool
    confidence: float
    reason: EndReason
    endpoint_ms: float  # silence waited after the last voiced frame before the end was decided
    queue_ms: float
    decode_ms: float
    eot: float | None = None  # the end-of-turn model's last word on this turn (None: not asked)
    speaker: int | None = None  # who spoke (a session that asked for speakers), from 0
    speaker_confidence: float | None = None  # how close the voice is to that speaker's (0-1)


@dataclass(frozen=True)
class FinalFailed:
    """The utterance's final cannot be produced: it is owed an error naming it instead."""

    utt: int
    why: str


@dataclass(frozen=True)
class SessionFailed:
    """Handling the session failed; what it owed was sent as FinalFailed first."""

    why: str


@dataclass(frozen=True)
class TurnEager:
    """The end-of-turn model thinks the turn may be over (above its eager threshold, below its
    end one): the utterance's speculative final, to start preparing a reply with. The turn's
    final repeats it exactly, unless TurnResumed comes first."""

    utt: int
    text: str
    start: float
    end: float
    eot: float
    confidence: float  # the speculative final's (exp of its average token log-probability)


@dataclass(frozen=True)
class TurnResumed:
    """Speech went on after a TurnEager: that transcript is withdrawn."""

    utt: int


Event = SpeechStarted | SpeechStopped | Interim | Final | FinalFailed | SessionFailed | TurnEager | TurnResumed
