"""One session, the core every wire protocol shares: audio in, jobs out, results back in order.

The session owns the guarantees of the client protocol: utterances numbered 0, 1, 2, … with
exactly one final each, in order; interims only before their final, `rev` increasing, the
stable prefix only growing; every final that cannot be produced becomes a `FinalFailed` naming
its utterance. It speaks no wire format and does no I/O: each call changes its state and
returns the effects to carry out, in order (gateway/core/effects.py); a driver does them
(gateway/transport/driver.py). Its tests feed it audio and results and look at the effects.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from common.audio import StreamResampler
from common.clock import SYSTEM, Clock
from common.messages import Job, JobKind, Result
from common.settings import GatewaySettings
from gateway.core.effects import AppendAudio, Cancel, DropAudio, Effect, Emit, Record, Step
from gateway.core.endpoint import Endpointer
from gateway.core.eot import TurnQuestions
from gateway.core.events import EndReason, SpeechStarted, SpeechStopped
from gateway.core.finals import Finals
from gateway.core.frames import RATE, Audio, Began, Ended, Event, Paused, Probe, WentOn
from gateway.core.held import HeldAudio
from gateway.core.interims import Interims
from gateway.core.jobs import job_for
from gateway.core.options import EotRule, SessionOptions, Turn
from gateway.core.speakers import Speakers
from gateway.core.speculation import Speculation
from gateway.core.state import Core, PendingFinal, Utterance, dump_pending, pending_field
from gateway.metrics import GatewayMetrics

logger = logging.getLogger(__name__)
SPECULATION_SLACK_MS = 500  # a speculative job outlives the latest its endpoint can come by this


def default_turn(settings: GatewaySettings, options: SessionOptions) -> Turn:
    return Turn(
        settings.FINAL_SILENCE_MS_MIN, settings.FINAL_SILENCE_MS_MAX, settings.PRE_ROLL_MS, eager_ms=options.eager_ms
    )


class Session(Finals):
    def __init__(
        self,
        settings: GatewaySettings,
        options: SessionOptions,
        gateway_id: str,
        metrics: GatewayMetrics,
        *,
        session_id: str = "",
        resumable: bool = False,
        clock: Clock = SYSTEM,
    ) -> None:
        super().__init__(settings, metrics, clock)
        self.options = options
        self.gateway_id = gateway_id
        self.id = session_id or uuid.uuid4().hex[:16]
        self.resumable = resumable  # its state is recorded as it goes (Record effects)
        self.broken: str | None = None  # why this session was abandoned
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
            eot=options.eot,
            eot_probe_ms=settings.EOT_PROBE_MS,
            eot_speculate_ms=settings.EOT_SPECULATE_MS,
            interims=options.interim,
        )
        self.speculation = Speculation(self.id, metrics)
        self.turns = TurnQuestions(self.endpointer, self.speculation, self._job, clock)
        self.interims = Interims(
            settings.INTERIM_MIN_MS, settings.INTERIM_DEADLINE_MS, self.endpointer, self._job, metrics, clock
        )
        self.samples_in = 0  # 16 kHz samples of audio received
        self.next_utt = 0
        self.current: Utterance | None = None
        self.held = HeldAudio()  # written again when a final is re-queued (a failover may lose it)
        self.audio_dropped = 0  # utterances below this have had their audio keys deleted
        # Who spoke, when asked: labels from the finals' speaker embeddings (recorded when changed).
        self.speakers = Speakers(options.max_speakers) if options.diarize else None
        self.speakers_dirty = False

    # --- what the driver and the adapters read ------------------------------------------

    @property
    def position(self) -> int:
        """16 kHz samples of the client's audio this session holds for good (a resuming client
        sends its audio again from here)."""
        return self.endpointer.held_from

    @property
    def audio_s(self) -> float:
        """Seconds of audio received so far (the session's clock)."""
        return self.samples_in / RATE

    def core(self) -> Core:
        return Core(
            self.next_utt, self.next_final, self.audio_dropped, self.lang, self.recent_text, self.heard, self.current
        )

    def snapshot(self) -> dict[str, str]:
        """The fields of the resumable state that changed since the last snapshot (the whole
        of it but the pending finals that did not)."""
        fields = {"core": self.core().dumps(), "endpoint": self.endpointer.snapshot(), "pos": str(self.position)}
        if self.speakers is not None and self.speakers_dirty:
            fields["speakers"] = json.dumps(self.speakers.dump(), separators=(",", ":"))
            self.speakers_dirty = False
        fields.update({pending_field(n): "" for n in self.resolved})
        fields.update(
            {pending_field(n): dump_pending(self.pending[n]) for n in sorted(self.dirty) if n in self.pending}
        )
        self.resolved, self.dirty = [], set()
        return fields

    def _done(self, step: Step) -> list[Effect]:
        step.add(self._release())
        record: list[Effect] = [Record(self.snapshot())] if step.record and self.resumable else []
        return [*step.audio, *step.emits, *record, *step.jobs]

    # --- audio ---------------------------------------------------------------------------

    def feed(self, pcm: bytes) -> list[Effect]:
        """PCM16 at the session's sample rate."""
        pcm16k = self.resampler.process(pcm) if self.resampler else pcm
        self.samples_in += len(pcm16k) // 2
        step = Step()
        self._handle(self.endpointer.decide(), step)  # an end-of-turn answer that ends the turn
        self._handle(self.endpointer.feed(pcm16k), step)
        if self.options.interim:
            step.add(self.interims.maybe_ask(self.current))
        return self._done(step)

    def finalize(self) -> list[Effect]:
        """End the utterance being spoken now (a SpeechStopped among the effects: a final was
        queued for it)."""
        step = Step()
        self._handle(self.endpointer.force_end(), step)
        return self._done(step)

    def discard(self) -> list[Effect]:
        """Forget the utterance being spoken (the client cleared its input): it gets no final, its
        audio is deleted and its number goes to the next one."""
        utt = self.current
        self.endpointer.reset()
        step = Step()
        step.add(self.speculation.drop("the client discarded the utterance"))
        if utt is None:
            return self._done(step)
        self.current = None
        if utt.n == self.next_utt - 1:
            self.next_utt -= 1
        self.interims.forget(utt.n)
        self.held.release(utt.n)
        step.add([DropAudio((utt.n,)), Record({})])
        logger.info("session %s utt %d: discarded by the client", self.id, utt.n)
        return self._done(step)

    def set_turn(self, turn: Turn | None, eot: EotRule | None = None) -> None:
        """New turn rules: silence (`turn`, None: the service's), and the end-of-turn model's
        (`eot`, None: silence alone)."""
        turn = turn or default_turn(self.settings, self.options)
        self.options.turn, self.options.eot = turn, eot
        self.endpointer.configure(
            turn.silence_min_ms, turn.silence_max_ms, turn.pre_roll_ms, turn.on_silence, turn.eager_ms, eot
        )

    def set_rate(self, rate: int) -> None:
        """The client's audio comes at another rate from now on."""
        if rate != self.options.sample_rate:
            self.options.sample_rate = rate
            self.resampler = StreamResampler(rate, RATE) if rate != RATE else None

    def set_language(self, lang: str | None) -> None:
        self.lang = self.options.lang = lang

    def _handle(self, events: list[Event], step: Step) -> None:
        for ev in events:
            if isinstance(ev, Began):
                self.current = Utterance(n=self.next_utt, start=ev.sample / RATE)
                self.next_utt += 1
                step.add([Record({}), Emit(SpeechStarted(self.current.n, self.current.start))])
            elif isinstance(ev, Audio) and self.current is not None:
                utt = self.current
                self.held.add(utt.n, ev.pcm, utt.appended)
                step.add([AppendAudio(utt.n, utt.appended, ev.pcm)])
                utt.appended += len(ev.pcm)
            elif isinstance(ev, Paused) and self.current is not None:
                step.add(self._speculate(self.current))
            elif isinstance(ev, Probe) and self.current is not None:
                step.add(self.turns.ask(self.current, ev.sample))
            elif isinstance(ev, WentOn):
                step.add(self.turns.resumed(self.current))
                step.add(self.speculation.drop("speech went on"))
            elif isinstance(ev, Ended) and self.current is not None:
                self._end(self.current, ev, step)

    def _end(self, utt: Utterance, ev: Ended, step: Step) -> None:
        self.current = None
        eot = self.turns.forget()
        if ev.reason in (EndReason.SILENCE, EndReason.MODEL) and ev.cut is not None:
            # Speech, and the trailing silence up to the pause: what the speculative job decoded.
            audio_end = (ev.cut - utt.start_sample) * 2
        else:
            audio_end = utt.appended - ev.tail_bytes
        waited_s = max(0, ev.decided - ev.sample) / RATE
        if audio_end <= 0:
            # An utterance that opened at a forced cut with nothing after it: no audio, no number.
            if utt.n == self.next_utt - 1:
                self.next_utt -= 1
            self.held.release(utt.n)
            step.add([Record({})])
            return
        keep = utt.stable if self.settings.FINAL_KEEPS_STABLE else ""
        job = self._job(JobKind.FINAL, utt, audio_end, prefix=keep)
        ready, effects = self.speculation.settle(job)
        step.add(effects)
        now = self.clock.now()
        end = ev.sample / RATE
        self.pending[utt.n] = PendingFinal(
            job, utt.start, end, now, now, endpoint_ms=waited_s * 1000.0, reason=ev.reason, eot=eot
        )
        self.dirty.add(utt.n)
        self.interims.forget(utt.n)
        step.add([Record({}), Emit(SpeechStopped(utt.n, end, ev.reason))])
        if ready is not None:
            logger.info("session %s utt %d: final ready at the endpoint (speculative %s)", self.id, utt.n, job.id)
            step.add(self._resolve(self.pending[utt.n], ready))
            return
        # Queued now, or once its session's earlier finals are answered (_release, at the end of
        # this step and the next ones).
        logger.info("session %s utt %d: final (%.2f-%.2fs, %d bytes)", self.id, utt.n, utt.start, end, audio_end)

    # --- jobs ----------------------------------------------------------------------------

    def _job(self, kind: JobKind, utt: Utterance, audio_end: int, **extra: Any) -> Job:
        return job_for(self, kind, utt, audio_end, **extra)

    def _speculate(self, utt: Utterance) -> list[Effect]:
        """The speaker paused: queue the would-be final of the audio so far. It is worth nothing
        once the endpoint must have been decided (then its final stands in the final queue)."""
        if utt.appended <= 0:
            return []
        keep = utt.stable if self.settings.FINAL_KEEPS_STABLE else ""
        wait_ms = max(0, self.endpointer.silence_max_ms - self.endpointer.pause_ms())
        deadline = self.clock.wall_ms() + wait_ms + SPECULATION_SLACK_MS
        return self.speculation.begin(self._job(JobKind.SPECULATIVE, utt, utt.appended, prefix=keep, deadline=deadline))

    def tick(self) -> list[Effect]:
        """Periodic: free an interim slot past its deadline; re-queue finals without result; delete
        the audio of delivered finals (the last one's stays: it is the next final's context)."""
        step = Step()
        self._handle(self.endpointer.decide(), step)
        done_below = self.next_final - 1
        if done_below > self.audio_dropped:
            step.add([DropAudio(tuple(range(self.audio_dropped, done_below)))])
            self.audio_dropped = done_below
        if self.interims.expired() and self.options.interim:
            step.add(self.interims.maybe_ask(self.current))
        now = self.clock.now()
        for p in list(self.pending.values()):
            if p.result is None and p.queued and now - p.queued_at > self.settings.FINAL_TIMEOUT_S:
                step.add(self._try_again(p, "no final after %.0fs" % self.settings.FINAL_TIMEOUT_S))
        return self._done(step)

    def requeue_pending(self) -> list[Effect]:
        """After a result-channel reconnect results may have been missed: ask again. The result
        cache answers finals already decoded without a second decode."""
        step = Step()
        for p in list(self.pending.values()):
            if p.result is None and p.queued:
                step.add(self._try_again(p, "results may have been missed while resubscribing"))
        self.interims.reset()
        return self._done(step)

    # --- results -------------------------------------------------------------------------

    def on_result(self, result: Result) -> list[Effect]:
        """A decoder's result. Its messages for the client come first (a driver tells them at
        once); when the end-of-turn model's answer or the words it waited for end the turn here,
        the rest of that end follows (recorded and queued at the driver's next step)."""
        emits = self._result(result)
        if self.endpointer.eot is None or result.kind not in (JobKind.TURN, JobKind.SPECULATIVE):
            return list(emits)
        step = Step()
        step.add(emits)
        self._handle(self.endpointer.decide(), step)
        return self._done(step)

    def _result(self, result: Result) -> list[Emit]:
        if result.kind == JobKind.INTERIM:
            self.metrics.decoded_seconds.labels(result.kind).inc(result.decode_ms / 1000.0)
            return self.interims.on_result(result, self.current)
        if result.kind == JobKind.TURN:
            return self.turns.answer(result, self.current)
        p = self.pending.get(result.utt)
        if result.kind == JobKind.SPECULATIVE:
            used = self.speculation.on_result(result, p.job.id if p is not None and p.result is None else None)
            if used is not None and p is not None:
                return self._resolve(p, used)
            if self.speculation.holds(result) and result.text:
                # The whole utterance's words up to the pause say whether it ends a sentence or
                # stops mid-phrase: the silence rule, the eager end of turn and the end-of-turn
                # model weigh them. A session without interims (Deepgram's default) has no
                # other words to go by.
                start = self.current.start_sample if self.current is not None else 0
                self.endpointer.heard(result.text, start + self.speculation.guess_end(), whole=True)
            return self.turns.eager(self.current)
        if p is None or p.result is not None:
            return []  # a duplicate (re-queued job answered twice): already resolved
        return self._resolve(p, result)

    def abandon(self, why: str) -> list[Emit]:
        """Handling this session failed (a bug, or a result it cannot take): what it owes becomes
        errors, then SessionFailed (its connection tells the client and closes). Other sessions
        are not touched."""
        if self.broken is not None:
            return []
        self.broken = why
        return self.fail_outstanding("the session failed") + self._failed(why)

    def fail_outstanding(self, why: str, open_one: Utterance | None = None) -> list[Emit]:
        """Every utterance still owed a final, the one being spoken included, gets an error
        naming it instead, in order."""
        emits = super().fail_outstanding(why, open_one or self.current)
        self.current = None
        return emits

    def _speaker(self, r: Result) -> tuple[int, float] | None:
        if self.speakers is None or not r.voice:
            return None
        self.speakers_dirty = True
        return self.speakers.assign(r.voice, r.audio_s)

    def _released(self, utt: int) -> None:
        self.held.release(utt)

    def cleanup(self) -> list[Effect]:
        """Session gone for good (not kept for a resume): no one will hear its finals still
        pending, so their jobs are cancelled (a decoder drops them undecoded, rather than spend
        seconds on a departed client's long utterances while others' finals wait) and all its
        audio goes."""
        effects = self.speculation.drop("the session ended")
        effects += [Cancel(p.job.id) for p in self.pending.values() if p.result is None]
        gone = tuple(range(self.audio_dropped, self.next_utt))
        return [*effects, *([DropAudio(gone)] if gone else [])]
