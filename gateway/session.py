"""One session, the core every wire protocol shares: audio in, jobs out, results back in order.

The session owns the guarantees of the client protocol: utterances numbered 0, 1, 2, … with
exactly one final each, in order; interims only before their final, `rev` increasing, the
stable prefix only growing; every final that cannot be produced becomes a `FinalFailed` naming
its utterance. It speaks no wire format: it emits `gateway.events` for its connection's
protocol adapter to render.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from common.audio import StreamResampler
from common.clock import now_ms
from common.messages import Job, JobKind, Result
from common.settings import Settings
from gateway.events import (
    EndReason,
    Event,
    FinalFailed,
    SessionFailed,
    SpeechStarted,
    SpeechStopped,
)
from gateway.heldaudio import HeldAudio
from gateway.interims import Interims
from gateway.jobqueue import Queue
from gateway.jobs import PROMPT_CHARS, job_for
from gateway.metrics import GatewayMetrics
from gateway.options import SessionOptions, Turn
from gateway.resume import LEASE_MS, Journal, NullJournal
from gateway.sessionstate import (
    Core,
    Heard,
    PendingFinal,
    Utterance,
    dump_pending,
    final_event,
    held_position,
    pending_field,
)
from gateway.speculation import Speculation
from gateway.vad import RATE, Endpointer

logger = logging.getLogger(__name__)
RENEW_S = 1.0  # how often a connected session renews its lease (and records its position)
FENCED = "taken over by another gateway"  # what `broken` says of a session resumed elsewhere
SPECULATION_SLACK_MS = 500  # a speculative job outlives the latest its endpoint can come by this


def default_turn(settings: Settings, options: SessionOptions) -> Turn:
    return Turn(
        settings.FINAL_SILENCE_MS_MIN, settings.FINAL_SILENCE_MS_MAX, settings.PRE_ROLL_MS, eager_ms=options.eager_ms
    )


class Session:
    def __init__(
        self,
        settings: Settings,
        options: SessionOptions,
        queue: Queue,
        gateway_id: str,
        emit: Callable[[Event], None],
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.options = options
        self.queue = queue
        self.gateway_id = gateway_id
        self.emit = emit
        self.metrics = metrics
        self.broken: str | None = None  # why this session was abandoned
        self.resume_token = ""  # a resumable session's (sent once, in `started`)
        self.id = uuid.uuid4().hex[:16]
        self.lang = options.lang
        self.resampler = StreamResampler(options.sample_rate, RATE) if options.sample_rate != RATE else None
        turn = options.turn or default_turn(settings, options)
        self.endpointer = Endpointer(
            settings.VAD_MODE,
            turn.pre_roll_ms,
            settings.MIN_SPEECH_MS,
            turn.silence_min_ms,
            turn.silence_max_ms,
            settings.MAX_UTTERANCE_S,
            turn.on_silence,
            speculate_ms=settings.SPECULATE_MS,
            eager_ms=turn.eager_ms,
        )
        self.speculation = Speculation(self.id, queue, metrics)
        self.interims = Interims(settings, self.endpointer, self._job, queue.enqueue, emit, metrics)
        self.samples_in = 0  # 16 kHz samples of audio received
        self.next_utt = 0
        self.current: Utterance | None = None
        self.pending: dict[int, PendingFinal] = {}
        self.held = HeldAudio()  # written again when a final is re-queued (a failover may lose it)
        self.next_final = 0  # the utterance whose final goes out next
        self.recent_text = ""
        self.heard: Heard | None = None
        self.audio_dropped = 0  # utterances below this have had their audio keys deleted
        self.finals_done = asyncio.Event()  # set while no final is outstanding
        self.finals_done.set()
        self.room = asyncio.Event()  # set while fewer than MAX_PENDING_FINALS finals are outstanding
        self.room.set()
        # Where a resumable session records its state (gateway/resume.py). The changes that
        # happen in results (deliveries, stable prefixes) are recorded with the next lease
        # renewal: until then the log of sent messages, written before each is sent, has them.
        self.journal: Journal = NullJournal()
        self.resolved: list[int] = []  # utterances whose pending final went out since the last record
        self.renewed_at = 0.0

    # --- the state a gateway taking the session over needs ----------------------------------

    def core(self) -> Core:
        return Core(
            self.next_utt, self.next_final, self.audio_dropped, self.lang, self.recent_text, self.heard, self.current
        )

    @property
    def position(self) -> int:
        """16 kHz samples of the client's audio this gateway holds for good (a resuming client
        sends its audio again from here)."""
        return held_position(self.endpointer, self.current)

    async def record(self, **fields: str) -> None:
        """Write the session's state (and `fields`) to its journal now."""
        gone = {pending_field(n): "" for n in self.resolved}
        self.resolved = []
        await self.journal.update({"core": self.core().dumps(), "pos": str(self.position), **gone, **fields})

    # --- audio ---------------------------------------------------------------------------

    @property
    def audio_s(self) -> float:
        """Seconds of audio received so far (the session's clock)."""
        return self.samples_in / RATE

    async def on_audio(self, pcm: bytes) -> None:
        """PCM16 at the session's sample rate."""
        pcm16k = self.resampler.process(pcm) if self.resampler else pcm
        self.samples_in += len(pcm16k) // 2
        await self._handle(self.endpointer.feed(pcm16k))
        await self._maybe_interim()

    async def finalize(self) -> bool:
        """End the utterance being spoken now; whether a final was queued for it."""
        return await self._handle(self.endpointer.force_end()) > 0

    async def discard(self) -> None:
        """Forget the utterance being spoken (the client cleared its input): it gets no final, its
        audio is deleted and its number goes to the next one."""
        utt = self.current
        self.endpointer.reset()
        await self.speculation.drop("the client discarded the utterance")
        if utt is None:
            return
        self.current = None
        if utt.n == self.next_utt - 1:
            self.next_utt -= 1
        self.interims.forget(utt.n)
        self.held.release(utt.n)
        await self.queue.drop_audio(self.id, utt.n)
        await self.record()
        logger.info("session %s utt %d: discarded by the client", self.id, utt.n)

    def set_turn(self, turn: Turn | None) -> None:
        turn = turn or default_turn(self.settings, self.options)
        self.options.turn = turn
        self.endpointer.configure(
            turn.silence_min_ms, turn.silence_max_ms, turn.pre_roll_ms, turn.on_silence, turn.eager_ms
        )

    def set_rate(self, rate: int) -> None:
        """The client's audio comes at another rate from now on."""
        if rate != self.options.sample_rate:
            self.options.sample_rate = rate
            self.resampler = StreamResampler(rate, RATE) if rate != RATE else None

    async def _handle(self, events: list[Any]) -> int:
        """Act on the endpointer's events; how many finals were queued."""
        queued = 0
        for ev in events:
            if ev.kind == "start":
                self.current = Utterance(n=self.next_utt, start=ev.sample / RATE)
                self.next_utt += 1
                await self.record()
                self.emit(SpeechStarted(self.current.n, self.current.start))
            elif ev.kind == "audio" and self.current is not None:
                self.held.add(self.current.n, ev.audio, self.current.appended)
                self.current.appended = await self.queue.append_audio(
                    self.id, self.current.n, ev.audio, self.current.appended
                )
            elif ev.kind == "pause" and self.current is not None:
                await self._speculate(self.current)
            elif ev.kind == "speech":
                await self.speculation.drop("speech went on")
            elif ev.kind == "end" and self.current is not None:
                utt, end, reason = self.current, ev.sample / RATE, EndReason(ev.reason)
                self.current = None
                guess = self.speculation.guess
                if reason is EndReason.SILENCE and guess is not None and guess.job.utt == utt.n:
                    # The final decodes what the speculative job did: the speech and the
                    # trailing silence up to the pause.
                    audio_end = guess.job.audio_end
                else:
                    audio_end = utt.appended - ev.tail_bytes
                if await self._queue_final(utt, end, audio_end, max(0, ev.decided - ev.sample) / RATE, reason):
                    queued += 1
                    self.emit(SpeechStopped(utt.n, end, reason))
        return queued

    # --- jobs ----------------------------------------------------------------------------

    def _job(self, kind: JobKind, utt: Utterance, audio_end: int, **extra: Any) -> Job:
        return job_for(self, kind, utt, audio_end, **extra)

    async def _speculate(self, utt: Utterance) -> None:
        """The speaker paused: queue the would-be final of the audio so far. It is worth nothing
        once the endpoint must have been decided (then its final stands in the final queue)."""
        if utt.appended <= 0:
            return
        keep = utt.stable if self.settings.FINAL_KEEPS_STABLE else ""
        wait_ms = max(0, self.endpointer.silence_max_ms - self.endpointer.speculate_ms)
        deadline = now_ms() + wait_ms + SPECULATION_SLACK_MS
        await self.speculation.begin(self._job(JobKind.SPECULATIVE, utt, utt.appended, prefix=keep, deadline=deadline))

    async def _queue_final(
        self, utt: Utterance, end: float, audio_end: int, waited_s: float, reason: EndReason
    ) -> bool:
        """Queue the utterance's final; False when it had no audio (and so no number)."""
        if audio_end <= 0:
            # An utterance that opened at a forced cut with nothing after it: no audio, no number.
            if utt.n == self.next_utt - 1:
                self.next_utt -= 1
            self.held.release(utt.n)
            await self.record()
            return False
        keep = utt.stable if self.settings.FINAL_KEEPS_STABLE else ""
        job = self._job(JobKind.FINAL, utt, audio_end, prefix=keep)
        ready = await self.speculation.settle(job)
        now = time.monotonic()
        self.pending[utt.n] = PendingFinal(
            job=job,
            start=utt.start,
            end=end,
            queued_at=now,
            ended_at=now,
            endpoint_ms=waited_s * 1000.0,
            reason=reason,
        )
        self.finals_done.clear()
        self.interims.forget(utt.n)
        if len(self.pending) >= self.settings.MAX_PENDING_FINALS:
            self.room.clear()
        # Recorded before it is queued: a gateway taking over queues it again.
        await self.record(**{pending_field(utt.n): dump_pending(self.pending[utt.n])})
        if ready is not None:
            logger.info("session %s utt %d: final ready at the endpoint (speculative %s)", self.id, utt.n, job.id)
            self._resolve(self.pending[utt.n], ready)
            return True
        await self.queue.enqueue(job)
        logger.info("session %s utt %d: final queued (%.2f-%.2fs, %d bytes)", self.id, utt.n, utt.start, end, audio_end)
        return True

    async def _maybe_interim(self) -> None:
        if self.options.interim:
            await self.interims.maybe_ask(self.current)

    async def tick(self) -> None:
        """Periodic: free an interim slot past its deadline; re-queue finals without result; delete
        the audio of delivered finals (the last one's stays: it is the next final's context)."""
        done_below = self.next_final - 1
        if done_below > self.audio_dropped:
            await self.queue.drop_audio(self.id, *range(self.audio_dropped, done_below))
            self.audio_dropped = done_below
        if self.interims.expired():
            await self._maybe_interim()
        now = time.monotonic()
        for p in list(self.pending.values()):
            if p.result is None and now - p.queued_at > self.settings.FINAL_TIMEOUT_S:
                await self._try_again(p, "no final after %.0fs" % self.settings.FINAL_TIMEOUT_S)
        if now - self.renewed_at > RENEW_S:
            # The lease says its client is still connected here, and the position moves on.
            self.renewed_at = now
            await self.record(connected="1", lease=str(now_ms() + LEASE_MS))

    async def _try_again(self, p: PendingFinal, why: str) -> None:
        """Queue a pending final once more, as its next try; past MAX_DELIVERIES tries it is an
        error naming its utterance instead."""
        if p.tries >= self.settings.MAX_DELIVERIES:
            logger.error("session %s utt %d: no final after %d tries", self.id, p.job.utt, p.tries)
            self._resolve(p, Result.failure(p.job, "no result after %d tries" % p.tries, ""))
            return
        p.tries += 1
        p.queued_at = time.monotonic()
        logger.warning("session %s utt %d: %s, re-queued (try %d)", self.id, p.job.utt, why, p.tries)
        held = self.held.of(p.job.utt)
        if held is not None:
            await self.queue.restore_audio(self.id, p.job.utt, held)
        await self.queue.enqueue(p.job)

    async def requeue_pending(self) -> None:
        """After a result-channel reconnect results may have been missed: ask again. The result
        cache answers finals already decoded without a second decode."""
        for p in list(self.pending.values()):
            if p.result is None:
                await self._try_again(p, "results may have been missed while resubscribing")
        self.interims.reset()

    # --- results -------------------------------------------------------------------------

    def on_result(self, result: Result) -> None:
        if result.kind == JobKind.INTERIM:
            self.metrics.decoded_seconds.labels(result.kind).inc(result.decode_ms / 1000.0)
            self._on_interim(result)
            return
        p = self.pending.get(result.utt)
        if result.kind == JobKind.SPECULATIVE:
            used = self.speculation.on_result(result, p.job.id if p is not None and p.result is None else None)
            if used is not None and p is not None:
                self._resolve(p, used)
            elif self.endpointer.eager_ms and self.speculation.holds(result) and result.text:
                # Eager end of turn: the whole utterance's text says whether it ends a sentence.
                self.endpointer.last_text = result.text
            return
        if p is None or p.result is not None:
            return  # a duplicate (re-queued job answered twice): already resolved
        self._resolve(p, result)

    def _on_interim(self, result: Result) -> None:
        self.interims.on_result(result, self.current)

    def _resolve(self, p: PendingFinal, result: Result) -> None:
        p.result = result
        if result.kind == JobKind.FINAL:
            self.metrics.decoded_seconds.labels(result.kind).inc(result.decode_ms / 1000.0)
        while self.next_final in self.pending and self.pending[self.next_final].result is not None:
            done = self.pending.pop(self.next_final)
            self.held.release(done.job.utt)
            self._deliver(done)
            self.resolved.append(done.job.utt)
            self.next_final += 1
        if not self.pending:
            self.finals_done.set()
        if len(self.pending) < self.settings.MAX_PENDING_FINALS:
            self.room.set()

    def _deliver(self, p: PendingFinal) -> None:
        r = p.result
        assert r is not None
        # From the last voiced frame: the silence waited to decide the end counts too.
        latency = time.monotonic() - p.ended_at + p.endpoint_ms / 1000.0
        if r.error:
            self.emit(FinalFailed(r.utt, r.error))
        else:
            if self.lang is None and r.language:
                self.lang = r.language
                logger.info("session %s: language %s detected and kept", self.id, r.language)
            if r.text:
                # The recent finals, not just the last: more context for the model, and a prompt
                # long enough that the decoder cuts it to its common length (batchable).
                self.recent_text = (self.recent_text + " " + r.text).strip()[-PROMPT_CHARS:]
            self.heard = Heard(r.utt, p.job.audio_end, r.text) if r.text and self.settings.CONTEXT_S else None
            self.metrics.final_latency.observe(latency)
            self.emit(final_event(p, r))
        logger.info("session %s utt %d: final delivered %.0f ms after end of speech", self.id, r.utt, latency * 1000)

    def fail_outstanding(self, why: str) -> int:
        """Every utterance still owed a final gets an error naming it instead, in order (and
        the one being spoken too). How many."""
        owed = sorted(n for n in self.pending if n >= self.next_final)
        if self.current is not None and self.current.n not in owed:
            owed.append(self.current.n)
        for n in owed:
            self.emit(FinalFailed(n, why))
        self.resolved += list(self.pending)
        self.pending.clear()
        self.current = None
        self.next_final = self.next_utt
        self.finals_done.set()
        self.room.set()
        return len(owed)

    def abandon(self, why: str) -> None:
        """Handling this session failed (a bug, or a result it cannot take): what it owes becomes
        errors, then SessionFailed (its connection tells the client and closes). Other sessions
        are not touched."""
        if self.broken is not None:
            return
        self.broken = why
        self.fail_outstanding("the session failed")
        self.emit(SessionFailed(why))

    async def wait_for_room(self) -> None:
        """Until fewer than MAX_PENDING_FINALS finals are outstanding (each resolves by itself:
        a result, or an error after MAX_DELIVERIES tries)."""
        await self.room.wait()

    @property
    def finals_outstanding(self) -> int:
        return len(self.pending)

    async def cleanup(self) -> None:
        """Session gone: its audio keys are only needed by finals still pending (and, as their
        context, the audio of the utterance before the first of them)."""
        await self.speculation.drop("the session ended")
        needed = set(self.pending) | {n - 1 for n in self.pending}
        gone = [n for n in range(self.audio_dropped, self.next_utt) if n not in needed]
        if gone:
            await self.queue.drop_audio(self.id, *gone)
