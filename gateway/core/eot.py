"""A session's questions to the end-of-turn model (gateway/core/turntaking.py has when to ask
and what the answer does to the endpoint): the jobs, their answers, and the eager end of turn.

An eager end of turn (Flux's EagerEndOfTurn) is the utterance's speculative final told early:
once the model's answer is at the rule's `eager` probability or above and that result is in.
If speech goes on, it is withdrawn (TurnResumed); if the turn ends, its final is that result
(gateway/core/speculation.py keeps it), so the client hears the same words twice, never two
different ones.
"""

from __future__ import annotations

from collections.abc import Callable

from common.clock import Clock
from common.messages import Job, JobKind, Result
from gateway.core.effects import Effect, Emit, Enqueue
from gateway.core.endpoint import Endpointer
from gateway.core.events import TurnEager, TurnResumed
from gateway.core.frames import RATE
from gateway.core.speculation import Speculation
from gateway.core.state import Utterance

DEADLINE_MS = 1000  # an answer later than this is worth nothing: the pause has been judged


class TurnQuestions:
    def __init__(
        self, endpointer: Endpointer, speculation: Speculation, make_job: Callable[..., Job], clock: Clock
    ) -> None:
        self.endpointer = endpointer
        self.speculation = speculation
        self.make_job = make_job
        self.clock = clock
        self.asked: dict[str, int] = {}  # job id -> the sample it asks about
        self.last: float | None = None  # the open utterance's latest answer

    def ask(self, utt: Utterance, sample: int) -> list[Effect]:
        audio_end = (sample - utt.start_sample) * 2
        if audio_end <= 0 or audio_end > utt.appended:
            return []
        job = self.make_job(JobKind.TURN, utt, audio_end, deadline=self.clock.wall_ms() + DEADLINE_MS)
        self.asked[job.id] = sample
        return [Enqueue(job)]

    def answer(self, result: Result, utt: Utterance | None) -> list[Emit]:
        """The model's answer: handed to the endpointer (which ends the turn at the next step
        when it says so), and an eager end of turn when it calls for one."""
        sample = self.asked.pop(result.id, None)
        if sample is None or result.error or result.eot is None or utt is None or result.utt != utt.n:
            return []
        self.last = float(result.eot)
        self.endpointer.verdict_for(sample, self.last)
        return self.eager(utt)

    def eager(self, utt: Utterance | None) -> list[Emit]:
        """The eager end of turn, if the model's answer and the speculative result allow it now."""
        rule = self.endpointer.eot
        guess = self.speculation.guess
        verdict = self.endpointer.confidence()
        if (
            rule is None
            or rule.eager is None
            or utt is None
            or verdict is None
            or verdict < rule.eager
            or guess is None
            or guess.eager
            or guess.result is None
            or guess.job.utt != utt.n
            or not guess.result.text
        ):
            return []
        guess.eager = True
        end = utt.start + guess.job.audio_end / 2 / RATE
        r = guess.result
        return [Emit(TurnEager(utt.n, r.text, utt.start, end, verdict, r.confidence))]

    def resumed(self, utt: Utterance | None) -> list[Emit]:
        """Speech went on: an eager end of turn told in this pause is withdrawn."""
        guess = self.speculation.guess
        if utt is None or guess is None or not guess.eager:
            return []
        return [Emit(TurnResumed(utt.n))]

    def forget(self) -> float | None:
        """The utterance ended: its questions are over; its latest answer (weighed with the words)."""
        last, self.last = self.last, None
        self.asked.clear()
        weighed = self.endpointer.confidence()
        return weighed if weighed is not None and last is not None else last
