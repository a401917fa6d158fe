"""A session core with its effects carried out in memory, as a driver would: audio keys in a
dict, queued jobs in a list, records merged into a state, messages logged before they are
"sent". No Redis, no event loop."""

from __future__ import annotations

from typing import Any

from common import keys
from common.clock import Clock
from common.messages import Job, Result
from gateway.core.effects import AppendAudio, Cancel, DropAudio, Effect, Emit, Enqueue, Record, RestoreAudio
from gateway.core.events import Event
from gateway.core.options import SessionOptions
from gateway.core.session import Session
from gateway.metrics import GatewayMetrics
from gateway.protocols.native import render
from stt.speech import Speech
from tests.conftest import make_settings


class FakeClock:
    """Time that moves only when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def clock(self) -> Clock:
        return Clock(lambda: self.t, lambda: int(self.t * 1000))


class Harness:
    def __init__(self, options: SessionOptions | None = None, resumable: bool = False, **overrides: Any) -> None:
        # Speculation is tested on its own (test_speculation.py); here each final is its own job.
        overrides.setdefault("SPECULATE_MS", 0)
        self.settings = make_settings("tiny.en", "redis://127.0.0.1:1/0", **overrides)
        self.time = FakeClock()
        self.metrics = GatewayMetrics()
        self.audio: dict[str, bytes] = {}
        self.queued: list[Job] = []
        self.cancelled: set[str] = set()
        self.state: dict[str, str] = {}  # what the records wrote
        self.sent: list[dict[str, Any]] = []  # the events, as the native protocol says them
        self.events: list[Event] = []
        self.effects: list[Effect] = []  # every effect, in order
        self.session = Session(
            self.settings,
            options or SessionOptions(sample_rate=16000, lang="en"),
            "gw",
            self.metrics,
            resumable=resumable,
            clock=self.time.clock(),
        )

    # --- carrying out the effects ---------------------------------------------------------

    def apply(self, effects: list[Effect]) -> list[Effect]:
        for e in effects:
            self.effects.append(e)
            self.do(e)
        return effects

    def do(self, e: Effect) -> None:
        sid = self.session.id
        if isinstance(e, AppendAudio):
            key = keys.audio_key(sid, e.utt)
            old = b"" if e.offset == 0 else self.audio.get(key, b"")
            assert len(old) >= e.offset, "audio appended past the end of its key"
            self.audio[key] = old[: e.offset] + e.pcm
        elif isinstance(e, RestoreAudio):
            key = keys.audio_key(sid, e.utt)
            self.audio[key] = e.pcm + self.audio.get(key, b"")[len(e.pcm) :]
        elif isinstance(e, Enqueue):
            self.queued.append(e.job)
        elif isinstance(e, Cancel):
            self.cancelled.add(e.job_id)
        elif isinstance(e, DropAudio):
            for n in e.utts:
                self.audio.pop(keys.audio_key(sid, n), None)
        elif isinstance(e, Record):
            for name, value in e.fields.items():
                if value:
                    self.state[name] = value
                else:
                    self.state.pop(name, None)
        elif isinstance(e, Emit):
            self.events.append(e.event)
            msg = render(e.event, want_words=False)
            if msg is not None:
                msg["seq"] = len(self.sent)
                self.sent.append(msg)

    # --- driving the session ---------------------------------------------------------------

    def push(self, pcm: bytes) -> list[Effect]:
        return self.apply(self.session.feed(pcm))

    def feed(self, speech: Speech, chunk: int = 3200) -> None:
        pcm = speech.pcm16
        for i in range(0, len(pcm), chunk):
            self.push(pcm[i : i + chunk])

    def finalize(self) -> list[Effect]:
        return self.apply(self.session.finalize())

    def tick(self) -> list[Effect]:
        return self.apply(self.session.tick())

    def requeue(self) -> list[Effect]:
        return self.apply(self.session.requeue_pending())

    def cleanup(self) -> list[Effect]:
        return self.apply(self.session.cleanup())

    def abandon(self, why: str) -> list[Effect]:
        return self.apply(list(self.session.abandon(why)))

    def give(self, result: Result) -> list[Effect]:
        return self.apply(list(self.session.on_result(result)))

    def answer(self, job: Job, text: str = "", error: str | None = None) -> list[Effect]:
        result = Result.answering(job, text=text or "utt %d" % job.utt, error=error, audio_s=job.audio_end / 32000)
        return self.give(result)

    # --- looking ---------------------------------------------------------------------------

    def jobs(self, kind: str) -> list[Job]:
        return [j for j in self.queued if j.kind == kind]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == kind]

    def dropped(self, reason: str) -> float:
        return float(self.metrics.interims_dropped.labels(reason)._value.get())

    def audio_of(self, job: Job) -> bytes:
        return self.audio.get(job.audio_key, b"")[: job.audio_end]
