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

from common import keys
from common.audio import StreamResampler
from common.clock import now_ms
from common.messages import Job, Result
from common.settings import Settings
from gateway.events import (
    EndReason,
    Event,
    Final,
    FinalFailed,
    Interim,
    SessionFailed,
    SpeechStarted,
    SpeechStopped,
)
from gateway.jobqueue import Queue
from gateway.metrics import GatewayMetrics
from gateway.options import SessionOptions, Turn
from gateway.resume import LEASE_MS, Journal, NullJournal
from gateway.sessionstate import Core, Heard, PendingFinal, Utterance, dump_pending, pending_field
from gateway.stable import interim_text, stable_prefix
from gateway.vad import FRAME_MS, FRAME_SAMPLES, RATE, Endpointer, State

logger = logging.getLogger(__name__)
PROMPT_CHARS = 400
# Context and utterance together stay inside Whisper's 30 s window, with room to spare.
WINDOW_S = 28.0
BYTES_PER_S = RATE * 2
RENEW_S = 1.0  # how often a connected session renews its lease (and records its position)
FENCED = "taken over by another gateway"  # what `broken` says of a session resumed elsewhere


def final_prompt(user_prompt: str, recent_text: str) -> str:
    """The decoder's prompt: the client's prompt and the session's recent finals, the most recent kept."""
    return (user_prompt + " " + recent_text).strip()[-PROMPT_CHARS:]


def default_turn(settings: Settings) -> Turn:
    return Turn(settings.FINAL_SILENCE_MS_MIN, settings.FINAL_SILENCE_MS_MAX, settings.PRE_ROLL_MS)


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
        turn = options.turn or default_turn(settings)
        self.endpointer = Endpointer(
            settings.VAD_MODE,
            turn.pre_roll_ms,
            settings.MIN_SPEECH_MS,
            turn.silence_min_ms,
            turn.silence_max_ms,
            settings.MAX_UTTERANCE_S,
            turn.on_silence,
        )
        self.samples_in = 0  # 16 kHz samples of audio received
        self.next_utt = 0
        self.current: Utterance | None = None
        self.pending: dict[int, PendingFinal] = {}
        self.next_final = 0  # the utterance whose final goes out next
        self.interim_in_flight: tuple[int, int, int] | None = None  # (utt, rev, deadline ms)
        self.recent_text = ""
        self.heard: Heard | None = None
        self.audio_dropped = 0  # utterances below this have had their audio keys deleted
        self.interim_queued_at = 0.0
        self.finals_done = asyncio.Event()  # set while no final is outstanding
        self.finals_done.set()
        self.room = asyncio.Event()  # set while fewer than MAX_PENDING_FINALS finals are outstanding
        self.room.set()
        # Where a resumable session records its state (gateway/resume.py); the changes that
        # happen in results (deliveries, interims) are recorded by the next tick.
        self.journal: Journal = NullJournal()
        self.dirty = False
        self.resolved: list[int] = []  # utterances whose pending final went out since the last record
        self.renewed_at = 0.0

    # --- the state a gateway taking the session over needs ----------------------------------

    def core(self) -> Core:
        return Core(
            self.next_utt, self.next_final, self.audio_dropped, self.lang, self.recent_text, self.heard, self.current
        )

    @property
    def position(self) -> int:
        """16 kHz samples of the client's audio this gateway holds for good: everything before it
        is in an utterance's audio key or was silence left behind. A client that resumes sends
        its audio again from here."""
        if self.current is not None:
            return round(self.current.start * RATE) + self.current.appended // 2
        ep = self.endpointer
        if ep.state is State.CANDIDATE:
            return max(0, ep.utt_start)
        return max(0, ep.samples - len(ep.pre_roll) * FRAME_SAMPLES)

    async def record(self, **fields: str) -> None:
        """Write the session's state (and `fields`) to its journal now."""
        self.dirty = False
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
        if utt is None:
            return
        self.current = None
        if utt.n == self.next_utt - 1:
            self.next_utt -= 1
        if self.interim_in_flight and self.interim_in_flight[0] == utt.n:
            self.interim_in_flight = None
        await self.queue.drop_audio(self.id, utt.n)
        await self.record()
        logger.info("session %s utt %d: discarded by the client", self.id, utt.n)

    def set_turn(self, turn: Turn | None) -> None:
        turn = turn or default_turn(self.settings)
        self.options.turn = turn
        self.endpointer.configure(turn.silence_min_ms, turn.silence_max_ms, turn.pre_roll_ms, turn.on_silence)

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
                self.current.appended = await self.queue.append_audio(
                    self.id, self.current.n, ev.audio, self.current.appended
                )
            elif ev.kind == "end" and self.current is not None:
                utt, end, reason = self.current, ev.sample / RATE, EndReason(ev.reason)
                self.current = None
                if await self._queue_final(
                    utt, end, utt.appended - ev.tail_bytes, max(0, ev.decided - ev.sample) / RATE, reason
                ):
                    queued += 1
                    self.emit(SpeechStopped(utt.n, end, reason))
        return queued

    # --- jobs ----------------------------------------------------------------------------

    def _job(self, kind: str, utt: Utterance, audio_end: int, **extra: Any) -> Job:
        recent = self.recent_text
        heard = self.heard if kind == "final" else None
        if heard is not None and (
            heard.utt != utt.n - 1
            or heard.audio_end > self.settings.CONTEXT_S * BYTES_PER_S
            or heard.audio_end + audio_end > WINDOW_S * BYTES_PER_S
        ):
            heard = None
        if heard is not None:
            extra.update(
                context_key=keys.audio_key(self.id, heard.utt), context_end=heard.audio_end, context_text=heard.text
            )
            # The context's text is forced after the prompt, so the prompt is what came before it.
            recent = recent[: len(recent) - len(heard.text)].rstrip() if recent.endswith(heard.text) else ""
        return Job(
            id=keys.final_job_id(self.id, utt.n)
            if kind == "final"
            else keys.interim_job_id(self.id, utt.n, extra.get("rev", 0)),
            kind=kind,
            session=self.id,
            gateway=self.gateway_id,
            utt=utt.n,
            audio_key=keys.audio_key(self.id, utt.n),
            audio_end=audio_end,
            t0=utt.start,
            lang=self.lang,
            task=self.options.task,
            word_timestamps=self.options.word_timestamps and kind == "final",
            prompt=final_prompt(self.options.prompt, recent),
            hotwords=", ".join(self.options.hotwords) if kind == "final" else "",
            **extra,
        )

    async def _queue_final(
        self, utt: Utterance, end: float, audio_end: int, waited_s: float, reason: EndReason
    ) -> bool:
        """Queue the utterance's final; False when it had no audio (and so no number)."""
        if audio_end <= 0:
            # An utterance that opened at a forced cut with nothing after it: no audio, no number.
            if utt.n == self.next_utt - 1:
                self.next_utt -= 1
            await self.record()
            return False
        keep = utt.stable if self.settings.FINAL_KEEPS_STABLE else ""
        job = self._job("final", utt, audio_end, prefix=keep)
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
        if self.interim_in_flight and self.interim_in_flight[0] == utt.n:
            # Its utterance is over, so is its interim (dropped as stale whenever it comes): the
            # next utterance's first interim does not wait for it (of two waiting at a decoder,
            # the newer is decoded).
            self.interim_in_flight = None
        if len(self.pending) >= self.settings.MAX_PENDING_FINALS:
            self.room.clear()
        # Recorded before it is queued: a gateway taking over queues it again.
        await self.record(**{pending_field(utt.n): dump_pending(self.pending[utt.n])})
        await self.queue.enqueue(job)
        logger.info("session %s utt %d: final queued (%.2f-%.2fs, %d bytes)", self.id, utt.n, utt.start, end, audio_end)
        return True

    async def _maybe_interim(self) -> None:
        utt = self.current
        if utt is None or not self.options.interim or self.interim_in_flight is not None:
            return
        # New *speech*, not new audio: in the trailing silence before an end of speech an interim
        # would tell the client nothing new and keep the decoder busy just as the final comes.
        voiced = self.endpointer.speech_frames
        new_ms = (voiced - utt.voiced_from) * FRAME_MS
        if new_ms < self.settings.INTERIM_MIN_MS:
            if utt.interim_from and utt.appended > utt.interim_from:
                self.metrics.interims_coalesced.inc()
            return
        utt.voiced_from = voiced
        utt.rev += 1
        deadline = now_ms() + self.settings.INTERIM_DEADLINE_MS
        job = self._job("interim", utt, utt.appended, rev=utt.rev, prefix=utt.stable, deadline=deadline)
        utt.interim_from = utt.appended
        self.interim_in_flight = (utt.n, utt.rev, deadline)
        self.interim_queued_at = time.monotonic()
        await self.queue.enqueue(job)

    async def tick(self) -> None:
        """Periodic: free an interim slot past its deadline; re-queue finals without result; delete
        the audio of delivered finals (the last one's stays: it is the next final's context)."""
        done_below = self.next_final - 1
        if done_below > self.audio_dropped:
            await self.queue.drop_audio(self.id, *range(self.audio_dropped, done_below))
            self.audio_dropped = done_below
        if self.interim_in_flight and now_ms() > self.interim_in_flight[2] + 250:
            self.interim_in_flight = None
            self.metrics.interims_dropped.labels("timeout").inc()
            await self._maybe_interim()
        now = time.monotonic()
        for p in list(self.pending.values()):
            if p.result is None and now - p.queued_at > self.settings.FINAL_TIMEOUT_S:
                await self._try_again(p, "no final after %.0fs" % self.settings.FINAL_TIMEOUT_S)
        if self.dirty or now - self.renewed_at > RENEW_S:
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
        await self.queue.enqueue(p.job)

    async def requeue_pending(self) -> None:
        """After a result-channel reconnect results may have been missed: ask again. The result
        cache answers finals already decoded without a second decode."""
        for p in list(self.pending.values()):
            if p.result is None:
                await self._try_again(p, "results may have been missed while resubscribing")
        self.interim_in_flight = None

    # --- results -------------------------------------------------------------------------

    def on_result(self, result: Result) -> None:
        if result.kind == "interim":
            self._on_interim(result)
        else:
            p = self.pending.get(result.utt)
            if p is None or p.result is not None:
                return  # a duplicate (re-queued job answered twice): already resolved
            self._resolve(p, result)

    def _on_interim(self, result: Result) -> None:
        if self.interim_in_flight and self.interim_in_flight[:2] == (result.utt, result.rev):
            self.interim_in_flight = None
        utt = self.current
        if utt is None or utt.n != result.utt or result.rev <= utt.delivered_rev or result.error:
            self.metrics.interims_dropped.labels("stale").inc()
            return
        text = interim_text(result.text)
        if not text:
            self.metrics.interims_dropped.labels("empty").inc()
            return
        if not text.startswith(utt.stable):
            self.metrics.interims_dropped.labels("unstable").inc()
            return
        was_stable = utt.stable
        unchanged = bool(utt.texts) and text == utt.texts[-1]
        utt.delivered_rev = result.rev
        utt.texts = [*utt.texts[-1:], text]
        utt.stable = stable_prefix(utt.texts, utt.stable)
        # The raw text: whether the model heard a sentence end is what the endpointer asks.
        self.endpointer.last_text = result.text
        if unchanged and utt.stable == was_stable:
            self.metrics.interims_dropped.labels("unchanged").inc()
            return
        self.dirty = True  # its stable prefix, should a gateway take the session over
        self.metrics.interim_latency.observe(time.monotonic() - self.interim_queued_at)
        end = utt.start + result.audio_s
        self.emit(Interim(utt.n, result.rev, text, utt.stable, utt.start, end, result.confidence))

    def _resolve(self, p: PendingFinal, result: Result) -> None:
        p.result = result
        while self.next_final in self.pending and self.pending[self.next_final].result is not None:
            done = self.pending.pop(self.next_final)
            self._deliver(done)
            self.resolved.append(done.job.utt)
            self.next_final += 1
            self.dirty = True
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
            self.emit(
                Final(
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
            )
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
        self.dirty = True
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
        needed = set(self.pending) | {n - 1 for n in self.pending}
        gone = [n for n in range(self.audio_dropped, self.next_utt) if n not in needed]
        if gone:
            await self.queue.drop_audio(self.id, *gone)
