"""A session's finals in order: each utterance's pending final, resolved by its result (or an
error), delivered only when every one before it was, and the context the next one is decoded
with (the recent text, the last utterance heard)."""

from __future__ import annotations

import logging

from common.clock import Clock
from common.messages import JobKind, Result
from common.settings import GatewaySettings
from gateway.core.effects import Effect, Emit, Enqueue, RestoreAudio
from gateway.core.events import FinalFailed, SessionFailed
from gateway.core.held import HeldAudio
from gateway.core.jobs import PROMPT_CHARS
from gateway.core.state import Heard, PendingFinal, Utterance, final_event
from gateway.metrics import GatewayMetrics

logger = logging.getLogger(__name__)
# A session's finals in the shared final stream at once; its later ones wait in the gateway
# until one of these is answered. Finals go out in order anyway, so a later one decoded sooner
# would not reach its client sooner; held back, it cannot put a burst of one session's finals
# (a client ending utterances as fast as it may) ahead of every other session's.
QUEUED_FINALS = 2


class Finals:
    id: str
    lang: str | None
    next_utt: int
    held: HeldAudio

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics, clock: Clock) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.pending: dict[int, PendingFinal] = {}
        self.next_final = 0  # the utterance whose final goes out next
        self.recent_text = ""
        self.heard: Heard | None = None
        self.resolved: list[int] = []  # utterances whose pending final went out since the last record
        self.dirty: set[int] = set()  # pending finals to record (new, or tried again)

    @property
    def finals_outstanding(self) -> int:
        return len(self.pending)

    @property
    def has_room(self) -> bool:
        """Whether fewer than MAX_PENDING_FINALS finals are outstanding (else its audio waits)."""
        return len(self.pending) < self.settings.MAX_PENDING_FINALS

    def _resolve(self, p: PendingFinal, result: Result) -> list[Emit]:
        p.result = result
        if result.kind == JobKind.FINAL:
            self.metrics.decoded_seconds.labels(result.kind).inc(result.decode_ms / 1000.0)
        out: list[Emit] = []
        while self.next_final in self.pending and self.pending[self.next_final].result is not None:
            done = self.pending.pop(self.next_final)
            self._released(done.job.utt)
            out += self._deliver(done)
            self.resolved.append(done.job.utt)
            self.next_final += 1
        return out

    def _released(self, utt: int) -> None:
        """Its final went out: what was kept for re-queueing it can go."""

    def _deliver(self, p: PendingFinal) -> list[Emit]:
        r = p.result
        assert r is not None
        # From the last voiced frame: the silence waited to decide the end counts too.
        latency = self.clock.now() - p.ended_at + p.endpoint_ms / 1000.0
        logger.info("session %s utt %d: final delivered %.0f ms after end of speech", self.id, r.utt, latency * 1000)
        if r.error:
            return [Emit(FinalFailed(r.utt, r.error))]
        if self.lang is None and r.language:
            self.lang = r.language
            logger.info("session %s: language %s detected and kept", self.id, r.language)
        if r.text:
            # The recent finals, not just the last: more context for the model, and a prompt
            # long enough that the decoder cuts it to its common length (batchable).
            self.recent_text = (self.recent_text + " " + r.text).strip()[-PROMPT_CHARS:]
        self.heard = Heard(r.utt, p.job.audio_end, r.text) if r.text and self.settings.CONTEXT_S else None
        self.metrics.final_latency.observe(latency)
        return [Emit(final_event(p, r, self._speaker(r)))]

    def _speaker(self, r: Result) -> tuple[int, float] | None:
        """Who spoke the final `r` (a session that asked for speakers)."""
        return None

    def fail_outstanding(self, why: str, open_one: Utterance | None = None) -> list[Emit]:
        """Every utterance still owed a final gets an error naming it instead, in order (and
        `open_one`, the one being spoken, too)."""
        owed = sorted(n for n in self.pending if n >= self.next_final)
        if open_one is not None and open_one.n not in owed:
            owed.append(open_one.n)
        self.resolved += list(self.pending)
        self.pending.clear()
        self.next_final = self.next_utt
        return [Emit(FinalFailed(n, why)) for n in owed]

    def _failed(self, why: str) -> list[Emit]:
        return [Emit(SessionFailed(why))]

    def _release(self) -> list[Effect]:
        """Queue the finals waiting for their session's turn, oldest first, up to QUEUED_FINALS."""
        waiting = sorted(n for n, p in self.pending.items() if not p.queued and p.result is None)
        room = QUEUED_FINALS - sum(1 for p in self.pending.values() if p.queued and p.result is None)
        out: list[Effect] = []
        for n in waiting[: max(0, room)]:
            p = self.pending[n]
            p.queued, p.queued_at = True, self.clock.now()
            out.append(Enqueue(p.job))
        return out

    def _try_again(self, p: PendingFinal, why: str) -> list[Effect]:
        """Queue a pending final once more, as its next try; past MAX_DELIVERIES tries it is an
        error naming its utterance instead."""
        if p.tries >= self.settings.MAX_DELIVERIES:
            logger.error("session %s utt %d: no final after %d tries", self.id, p.job.utt, p.tries)
            return list(self._resolve(p, Result.failure(p.job, "no result after %d tries" % p.tries, "")))
        p.tries += 1
        p.queued_at = self.clock.now()
        self.dirty.add(p.job.utt)
        logger.warning("session %s utt %d: %s, re-queued (try %d)", self.id, p.job.utt, why, p.tries)
        held = self.held.of(p.job.utt)
        return [*([RestoreAudio(p.job.utt, held)] if held is not None else []), Enqueue(p.job)]
