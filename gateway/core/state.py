"""What a session remembers between audio chunks (its utterances, pending finals, context), and
that state as the strings a resumable session keeps in Redis (gateway/store/journal.py).

A gateway taking a session over rebuilds it from two things (gateway/core/restore.py): the
state fields, and the log of messages sent, which is the truth about what the client was told:
a final found there was delivered (whatever the state had not yet recorded), and the last
interim of the open utterance there fixes its stable prefix (so `stable_chars` never shrinks
across the break).

The fields of the state: `core` (numbering, context, the open utterance), `endpoint` (the
endpointer's snapshot, gateway/core/endpoint.py), `pos` (the session sample a resuming client
sends its audio again from), `options`, and one `pending:N` per final not yet delivered.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from common.messages import Job, Result
from gateway.core.events import EndReason, Final
from gateway.core.frames import FRAME_BYTES, RECENT_FRAMES
from gateway.core.options import EotRule, SessionOptions, Turn


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
    eot: float | None = None  # the end-of-turn model's last answer on this utterance
    queued: bool = False  # its job is in the final stream (else it waits for its session's turn)


def final_event(p: PendingFinal, r: Result, speaker: tuple[int, float] | None = None) -> Final:
    """The Final a pending final's result makes (`speaker`: who spoke, and how surely)."""
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
        eot=p.eot,
        speaker=speaker[0] if speaker else None,
        speaker_confidence=round(speaker[1], 3) if speaker else None,
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

    @property
    def start_sample(self) -> int:
        return round(self.start * 16000)


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
            "eot": p.eot,
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
        eot=obj.get("eot"),
    )


def dump_options(options: SessionOptions) -> str:
    return json.dumps(dataclasses.asdict(options), separators=(",", ":"))


def load_options(text: str) -> SessionOptions:
    obj: dict[str, Any] = json.loads(text)
    turn = Turn(**obj["turn"]) if obj.get("turn") else None
    eot = EotRule(**obj["eot"]) if obj.get("eot") else None
    return SessionOptions(**{**obj, "turn": turn, "eot": eot, "hotwords": tuple(obj.get("hotwords", ()))})


RECENT_BYTES = RECENT_FRAMES * FRAME_BYTES


@dataclass
class Snapshot:
    """A resumable session's recorded state, read back."""

    session: str
    core: Core
    endpoint: str  # the endpointer's snapshot ("": none recorded; it starts afresh at `pos`)
    pos: int
    pending: dict[int, PendingFinal]
    options: SessionOptions
    finished: bool
    speakers: dict[str, Any] | None = None  # the session's speakers so far (gateway/core/speakers.py)

    def recent_range(self) -> tuple[int, int, int] | None:
        """(utterance, first byte, end byte) of the open utterance's audio that its restored
        endpointer takes (the end of it, up to the recorded position); None: none is open."""
        current = self.core.current
        if current is None:
            return None
        return current.n, max(0, current.appended - RECENT_BYTES), current.appended

    @classmethod
    def parse(cls, session: str, state: dict[str, str], now: float) -> Snapshot:
        return cls(
            session=session,
            core=Core.loads(state["core"]) if state.get("core") else Core(),
            endpoint=state.get("endpoint", ""),
            pos=int(state.get("pos") or 0),
            pending={
                int(name.split(":", 1)[1]): load_pending(value, now)
                for name, value in state.items()
                if name.startswith("pending:")
            },
            options=load_options(state["options"]) if state.get("options") else SessionOptions(),
            finished=state.get("finished") == "1",
            speakers=json.loads(state["speakers"]) if state.get("speakers") else None,
        )
