"""A session resumed on another gateway goes on exactly as if nothing had happened.

The gateway is "killed" after every single write it makes (an audio append, a queued job, a
record of its state, a message logged before it is sent), the session is restored from what
those writes left, the client sends its audio again from the position it is told, and each
utterance's final must cover the same audio as in the run without a kill (its text here is a
digest of that audio), once, in order. No Redis, no Docker: the writes are carried out in
memory (tests/gateway/core/harness.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from common.messages import Job, JobKind, Result
from gateway.core.effects import Effect, Emit, Record
from gateway.core.frames import RATE
from gateway.core.restore import replay_of, restore
from gateway.core.state import Snapshot
from gateway.errors import ResumeRefused
from gateway.protocols.native import render
from stt.speech import Speech
from tests.gateway.core.harness import Harness

CHUNK = 3200  # 100 ms
RENEW_EVERY = 10  # chunks between lease renewals (RENEW_S, 1 s), each a record


def digest(job: Job, audio: bytes) -> str:
    return "u%d@%.3f:%s" % (job.utt, job.t0, hashlib.sha1(audio).hexdigest()[:12])


class Run:
    """One client's session through one or more gateways; `kill_at`: the gateway dies after
    that many writes (counting from the start of the session)."""

    def __init__(self, speech: Speech, speculate_ms: int, kill_at: int | None = None) -> None:
        self.speech = speech
        self.speculate_ms = speculate_ms
        self.kill_at = kill_at
        self.writes = 0
        self.log: list[dict[str, Any]] = []  # every message logged (what a resume replays from)
        self.h = self._harness()
        self.killed_at_byte: int | None = None

    def _harness(self) -> Harness:
        return Harness(INTERIM_MIN_MS=350, SPECULATE_MS=self.speculate_ms, resumable=True)

    def _do(self, effects: list[Effect]) -> bool:
        """Carry out effects, each a write (a message is logged, then sent); False: killed."""
        for e in effects:
            if self.kill_at is not None and self.writes >= self.kill_at:
                return False
            self.writes += 1
            if not isinstance(e, Emit):
                self.h.do(e)
            elif (msg := render(e.event, want_words=False)) is not None:
                self.log.append({**msg, "seq": len(self.log)})
        return True

    def _decode(self) -> bool:
        """A decoder answering every job queued (a cancelled one is dropped undecoded)."""
        while self.h.queued:
            job = self.h.queued.pop(0)
            if job.id in self.h.cancelled:
                continue
            audio = self.h.audio_of(job)
            text = "words so far" if job.kind == JobKind.INTERIM else digest(job, audio)
            result = Result.answering(job, text=text, audio_s=len(audio) / 32000)
            if not self._do(list(self.h.session.on_result(result))):
                return False
        return True

    def _step(self, effects: list[Effect]) -> bool:
        return self._do(effects) and self._decode()

    def stream(self, start: int = 0) -> bool:
        """The client streams from byte `start` to the end, then stops; False: killed."""
        pcm = self.speech.pcm16
        for n, i in enumerate(range(start, len(pcm), CHUNK)):
            self.h.time.t += CHUNK / 32000
            if not self._step(self.h.session.feed(pcm[i : i + CHUNK])):
                self.killed_at_byte = i
                return False
            if not self._step(self.h.session.tick()):
                return False
            if n % RENEW_EVERY == RENEW_EVERY - 1 and not self._step([Record(self.h.session.snapshot())]):
                return False
        return self._step(self.h.session.finalize())

    def resume(self) -> None:
        """A new gateway takes over from what the writes left; the client sends its audio again
        from the position it is told."""
        old = self.h
        self.kill_at = None
        snap = Snapshot.parse(old.session.id, dict(old.state), old.time.t)
        recent = b""
        where = snap.recent_range()
        if where is not None:
            n, first, end = where
            recent = old.audio.get("stt:audio:%s:%d" % (old.session.id, n), b"")[first:end]
        self.h = self._harness()
        session, effects = restore(self.h.settings, "gw2", self.h.metrics, snap, self.log, recent, self.h.time.clock())
        self.h.session, self.h.audio, self.h.state = session, old.audio, old.state
        self.h.time.t = old.time.t
        assert self._step(effects)
        assert self.stream(start=session.position * 2)

    def finals(self) -> list[tuple[int, str]]:
        return [(m["utterance"], m["text"]) for m in self.log if m["type"] == "final"]


@pytest.fixture(scope="module")
def talk() -> Speech:
    """Two recorded speakers, 1.2 s apart; the first is the talk whose resumed final said its
    sentence twice ("Concord returned to its place amidst the tents")."""
    from stt.speech import Speech as S
    from tests.realspeech import utterance

    a, b = utterance("6930-75918-0000", tail_s=0.0), utterance("6880-216547-0000", tail_s=0.0)
    import numpy as np

    gap = np.zeros(int(1.2 * RATE), np.float32)
    lead = np.zeros(int(0.5 * RATE), np.float32)
    audio = np.concatenate([lead, a.audio, gap, b.audio, gap])
    return S(audio, [], [a.text, b.text])


@pytest.mark.parametrize("speculate_ms", [100, 200])
def test_a_gateway_killed_after_any_write_loses_nothing_and_moves_no_cut(talk: Speech, speculate_ms: int) -> None:
    whole = Run(talk, speculate_ms)
    assert whole.stream()
    expected = whole.finals()
    assert [n for n, _ in expected] == [0, 1], expected
    total, wrong = whole.writes, []
    for k in range(1, total):
        run = Run(talk, speculate_ms, kill_at=k)
        assert not run.stream()
        run.resume()
        got = run.finals()
        if got != expected:
            wrong.append((k, run.killed_at_byte, got))
    assert not wrong, "%d of %d kill points changed the finals, e.g. %s (expected %s)" % (
        len(wrong),
        total,
        wrong[:3],
        expected,
    )


def test_a_replay_names_what_the_client_missed_or_is_refused() -> None:
    log = [{"seq": s, "type": "interim"} for s in range(5, 10)]
    assert [m["seq"] for m in replay_of(log, 7)] == [8, 9]
    assert replay_of(log, 9) == []
    with pytest.raises(ResumeRefused) as refused:
        replay_of(log, 2)  # 3 and 4 are gone from the capped log
    assert refused.value.code == "resume_gap"


def test_a_record_older_than_a_told_final_resumes_after_that_final(talk: Speech) -> None:
    """The gateway logged and sent utterance 0's final, then died before any record said the
    utterance had ended: the last record is from inside it. The new gateway resumes from the
    end the final names, so the utterance's tail is not heard again as a new one."""
    whole = Run(talk, 200)
    assert whole.stream()
    expected = whole.finals()
    run = Run(talk, 200)
    states: list[tuple[int, dict[str, Any]]] = []
    do = run._do

    def recording(effects: list[Effect]) -> bool:
        ok = do(effects)
        states.append((len(run.log), dict(run.h.state)))
        return ok

    run._do = recording  # type: ignore[method-assign]
    assert run.stream()
    first_interim = next(i for i, m in enumerate(run.log) if m["type"] == "interim")
    final0 = next(i for i, m in enumerate(run.log) if m["type"] == "final")
    inside = next(state for logged, state in states if logged > first_interim and "core" in state)
    run.log = run.log[: final0 + 1]
    run.h.state = inside
    told_end = int(run.log[final0]["end"] * RATE)
    run.resume()
    assert run.finals() == expected  # before the fix: a third final, the first one's tail
    assert run.h.session.position >= told_end
