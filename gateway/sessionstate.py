"""What a session remembers between audio chunks (its utterances, pending finals, context), and
that state as the strings a resumable session keeps in Redis (gateway/resume.py).

A gateway taking a session over rebuilds it from three things: the state fields, the audio
keys (an open utterance's audio is its key, whatever the state says of its length), and the
log of messages sent, which is the truth about what the client was told: a final found there
was delivered (whatever the state had not yet recorded), and the last interim of the open
utterance there fixes its stable prefix (so `stable_chars` never shrinks across the break).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from common.messages import Job, Result
from gateway.events import EndReason, Final
from gateway.options import SessionOptions, Turn
from gateway.vad import FRAME_SAMPLES, RATE, Endpointer, State


@dataclass
class PendingFinal:
    job: Job
    start: float
    end: float
    queued_at: float
    ended_at: float
    endpoint_ms: float = 0.0  # silence waited after the last voiced frame before ending it
    reason: EndReason = EndReason.SILENCE
    tries: int = 1
    result: Result | None = None


def final_event(p: PendingFinal, r: Result) -> Final:
    """The Final a pending final's result makes."""
    return Final(
        utt=r.utt,
        text=r.text,
        start=p.start,
        end=p.end,
        language=r.language,
        words=r.words,
        no_speech=r.no_speech,
        confidence=r.confidence,
        reason=p.reason,
        endpoint_ms=p.endpoint_ms,
        queue_ms=r.queue_ms,
        decode_ms=r.decode_ms,
    )


@dataclass
class Heard:
    """The last final delivered with text: acoustic context for the next utterance's final."""

    utt: int
    audio_end: int
    text: str


@dataclass
class Utterance:
    n: int
    start: float
    appended: int = 0  # bytes of 16 kHz PCM in its audio key
    interim_from: int = 0  # audio_end of the last interim queued
    voiced_from: int = 0  # the endpointer's voiced-frame count when the last interim was queued
    rev: int = -1  # rev of the last interim queued
    delivered_rev: int = -1
    texts: list[str] = field(default_factory=list)
    stable: str = ""


@dataclass
class Core:
    """The session's own counters and context (one Redis field, written on each change)."""

    next_utt: int = 0
    next_final: int = 0
    audio_dropped: int = 0
    lang: str | None = None
    recent_text: str = ""
    heard: Heard | None = None
    current: Utterance | None = None

    def dumps(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> Core:
        obj = json.loads(text)
        heard = Heard(**obj["heard"]) if obj.get("heard") else None
        current = Utterance(**obj["current"]) if obj.get("current") else None
        return cls(
            next_utt=obj["next_utt"],
            next_final=obj["next_final"],
            audio_dropped=obj.get("audio_dropped", 0),
            lang=obj.get("lang"),
            recent_text=obj.get("recent_text", ""),
            heard=heard,
            current=current,
        )


def pending_field(n: int) -> str:
    return "pending:%d" % n


def dump_pending(p: PendingFinal) -> str:
    return json.dumps(
        {
            "job": dataclasses.asdict(p.job),
            "start": p.start,
            "end": p.end,
            "endpoint_ms": p.endpoint_ms,
            "reason": str(p.reason),
            "tries": p.tries,
        },
        separators=(",", ":"),
    )


def load_pending(text: str, now: float) -> PendingFinal:
    obj = json.loads(text)
    return PendingFinal(
        job=Job(**obj["job"]),
        start=obj["start"],
        end=obj["end"],
        queued_at=now,
        ended_at=now,
        endpoint_ms=obj.get("endpoint_ms", 0.0),
        reason=EndReason(obj.get("reason", "silence")),
        tries=obj.get("tries", 1),
    )


def dump_options(options: SessionOptions) -> str:
    return json.dumps(dataclasses.asdict(options), separators=(",", ":"))


def load_options(text: str) -> SessionOptions:
    obj: dict[str, Any] = json.loads(text)
    turn = Turn(**obj["turn"]) if obj.get("turn") else None
    return SessionOptions(**{**obj, "turn": turn, "hotwords": tuple(obj.get("hotwords", ()))})


def held_position(endpointer: Endpointer, current: Utterance | None) -> int:
    """16 kHz samples of the client's audio a gateway holds for good: everything before it is in
    an utterance's audio key or was silence left behind (an open utterance's audio counts once
    it is in its key; the pre-roll and a candidate onset do not)."""
    if current is not None:
        return round(current.start * RATE) + current.appended // 2
    if endpointer.state is State.CANDIDATE:
        return max(0, endpointer.utt_start)
    return max(0, endpointer.samples - len(endpointer.pre_roll) * FRAME_SAMPLES)
