"""Turns ended by the end-of-turn model, in the session core with a fake model: asked at a short
pause, the turn ends there when it says so, waits when it does not (asked again, then capped),
falls back to silence when it never answers; and the eager end of turn (Flux) told once, taken
back when speech goes on, repeated exactly by the final."""

from __future__ import annotations

from typing import Any

from common.messages import Job, JobKind, Result
from gateway.core.events import EndReason, Final, SpeechStopped, TurnEager, TurnResumed
from gateway.core.options import EotRule, SessionOptions
from stt.speech import SENTENCES, Speech, conversation
from tests.gateway.core.harness import Harness

CHUNK = 960  # 30 ms: a step per frame, so the end is seen on the frame it is decided


class Turns(Harness):
    def __init__(self, rule: EotRule | None, **overrides: Any) -> None:
        overrides.setdefault("SPECULATE_MS", 200)
        overrides.setdefault("INTERIM_MIN_MS", 60000)
        super().__init__(SessionOptions(sample_rate=16000, lang="en", eot=rule), **overrides)

    def questions(self) -> list[Job]:
        return [j for j in self.queued if j.kind == JobKind.TURN]

    def answer_turn(self, job: Job, eot: float) -> None:
        self.give(Result.answering(job, eot=eot))

    def run(self, speech: Speech, model: Any = None, words: Any = "Words heard.", interims: str = "") -> None:
        """Stream `speech` frame by frame; the speculative job is decoded as `words` at once (or
        `words(job)`), each interim (when INTERIM_MIN_MS lets them be asked) as `interims` 150 ms later, and
        `model(job)` answers each question as it is asked (None: no answer)."""
        pcm, answered, decoded, told = speech.pcm16, 0, 0, 0
        asked: list[tuple[int, Job]] = []  # interims, and when they are answered
        for i in range(0, len(pcm), CHUNK):
            self.push(pcm[i : i + CHUNK])
            self.time.t += CHUNK / 32000
            for guess in self.jobs("speculative")[decoded:]:
                decoded += 1
                text = words(guess) if callable(words) else words
                self.give(Result.answering(guess, text=text, audio_s=guess.audio_end / 32000))
            # Interims are answered 150 ms late: a busy decoder takes speculative jobs first.
            asked.extend((i + 5 * CHUNK, job) for job in self.jobs("interim")[len(asked) :])
            while told < len(asked) and asked[told][0] <= i:
                interim = asked[told][1]
                told += 1
                self.give(Result.answering(interim, text=interims, audio_s=interim.audio_end / 32000))
            for job in self.questions()[answered:]:
                answered += 1
                eot = model(job) if model else None
                if eot is not None:
                    self.answer_turn(job, eot)

    def stopped(self) -> list[SpeechStopped]:
        return [e for e in self.events if isinstance(e, SpeechStopped)]


def one(tail_s: float = 4.0) -> Speech:
    return conversation([SENTENCES[0]], tail_s=tail_s)


def end_decided_ms(h: Turns, speech: Speech) -> float:
    """Silence waited before the end was decided (its pending final's, or its final's)."""
    pending = list(h.session.pending.values())
    if pending:
        return pending[0].endpoint_ms
    [final] = [e for e in h.events if isinstance(e, Final)]
    return final.endpoint_ms


def test_the_model_saying_done_ends_the_turn_at_its_first_question() -> None:
    h = Turns(EotRule(threshold=0.5))
    h.run(one(), model=lambda job: 0.9)
    [stop] = h.stopped()
    assert stop.reason is EndReason.MODEL
    assert len(h.questions()) == 1
    assert 150 <= end_decided_ms(h, one()) <= 240  # asked at EOT_PROBE_MS (150) of silence, answered at once


def test_not_done_and_words_stopped_mid_phrase_wait_ask_again_and_the_cap_ends_it() -> None:
    h = Turns(EotRule(threshold=0.5, timeout_ms=1500))
    h.run(one(), model=lambda job: 0.1, words="The quick brown fox jumps over the")
    [stop] = h.stopped()
    assert stop.reason is EndReason.SILENCE
    assert len(h.questions()) >= 3  # at 150 ms, then every 300 ms of silence
    assert 1500 <= end_decided_ms(h, one()) <= 1560


def test_a_model_that_never_answers_costs_no_more_than_silence_alone() -> None:
    silent = Turns(None)
    silent.run(one())
    unanswered = Turns(EotRule(threshold=0.5, timeout_ms=5000))
    unanswered.run(one(), model=None)
    assert unanswered.stopped()[0].reason is EndReason.SILENCE
    assert end_decided_ms(unanswered, one()) <= end_decided_ms(silent, one()) + 30


def test_an_answer_about_a_pause_that_is_over_is_not_taken() -> None:
    """Asked in a pause inside the sentence; the speaker goes on before the answer comes."""
    h = Turns(EotRule(threshold=0.5, timeout_ms=3000))
    speech = conversation([SENTENCES[0], SENTENCES[1]], pause_s=0.45, tail_s=0.0)
    pcm, i = speech.pcm16, 0
    while not h.questions():
        h.push(pcm[i : i + CHUNK])
        i += CHUNK
    [question] = h.questions()
    while h.session.endpointer.probed_at is not None:  # until speech goes on
        h.push(pcm[i : i + CHUNK])
        i += CHUNK
    h.answer_turn(question, 0.99)  # "done", about a pause that is over
    h.push(pcm[i : i + 10 * CHUNK])
    assert h.stopped() == [] and h.session.current is not None


def test_done_is_not_taken_while_the_words_stop_mid_phrase_and_not_yet_gives_way_to_silence() -> None:
    held = Turns(EotRule(threshold=0.5, timeout_ms=3000))
    held.run(one(), model=lambda job: 0.9, words="The quick brown fox jumps over the")
    assert held.stopped()[0].reason is EndReason.MODEL  # the silence rule's end, the model agreeing
    assert end_decided_ms(held, one()) >= 690  # the rule's longest after a mid-phrase word, not 150 ms
    sentence = Turns(EotRule(threshold=0.5, timeout_ms=3000))
    sentence.run(one(), model=lambda job: 0.1, words="The quick brown fox jumps over the lazy dog.")
    assert sentence.stopped()[0].reason is EndReason.SILENCE
    assert end_decided_ms(sentence, one()) <= 430  # "not yet", but the words end a sentence: silence decides


def test_an_eager_end_of_turn_is_told_once_withdrawn_when_speech_goes_on_and_repeated_by_the_final() -> None:
    rule = EotRule(threshold=0.8, eager=0.4, timeout_ms=3000)
    h = Turns(rule)
    speech = conversation([SENTENCES[0], SENTENCES[1]], pause_s=0.9, tail_s=2.0)
    goes_on = speech.spans[1][0]  # the turn's second sentence: until then, "not yet"

    def heard_to(job: Job) -> float:
        return job.t0 + job.audio_end / 32000  # session seconds

    def model(job: Job) -> float:
        return 0.6 if heard_to(job) < goes_on else 0.95

    def words(guess: Job) -> str:
        return "The quick brown fox and" if heard_to(guess) < goes_on else "The quick brown fox. Please call."

    h.run(speech, model=model, words=words)
    kinds = [type(e).__name__ for e in h.events if isinstance(e, (TurnEager, TurnResumed, SpeechStopped))]
    assert kinds == ["TurnEager", "TurnResumed", "TurnEager", "SpeechStopped"], kinds
    eagers = [e for e in h.events if isinstance(e, TurnEager)]
    final = next(e for e in h.events if isinstance(e, Final))
    assert final.text == eagers[-1].text and final.reason is EndReason.MODEL


def test_an_interim_a_word_short_does_not_overrule_the_speculative_final_s_sentence() -> None:
    """An interim asked just before the pause is decoded after the speculative final (decoders
    take those first). A word short of it ("... over the"), it would hold a finished sentence
    until the cap as if it stopped mid-phrase."""
    h = Turns(EotRule(threshold=0.5, timeout_ms=3000), INTERIM_MIN_MS=100)
    h.run(
        one(),
        model=lambda job: 0.1,
        words="The quick brown fox jumps over the lazy dog.",
        interims="The quick brown fox jumps over the",
    )
    [stop] = h.stopped()
    assert stop.reason is EndReason.SILENCE
    assert end_decided_ms(h, one()) <= 430  # the silence rule after a full stop, not the 3 s cap


def test_words_that_end_a_sentence_weigh_an_unsure_answer_toward_done() -> None:
    """Flux's default threshold 0.7: the model's 0.3 alone is "not yet"; with a full stop at the
    pause its odds x6 (0.72) end the turn at the first question; 0.1 (0.4) still vetoes."""
    unsure = Turns(EotRule(threshold=0.7, timeout_ms=3000))
    unsure.run(one(), model=lambda job: 0.3, words="The quick brown fox jumps over the lazy dog.")
    assert unsure.stopped()[0].reason is EndReason.MODEL
    assert end_decided_ms(unsure, one()) <= 240
    assert unsure.session.endpointer.confidence() is not None
    vetoed = Turns(EotRule(threshold=0.7, timeout_ms=3000))
    vetoed.run(one(), model=lambda job: 0.1, words="The quick brown fox jumps over the lazy dog.")
    assert vetoed.stopped()[0].reason is EndReason.SILENCE
    assert end_decided_ms(vetoed, one()) >= 390  # the silence rule's shortest, not the question's 150 ms
    no_mark = Turns(EotRule(threshold=0.7, timeout_ms=3000))
    no_mark.run(one(), model=lambda job: 0.3, words="The quick brown fox jumps over the lazy dog")
    assert no_mark.stopped()[0].reason is EndReason.SILENCE


def test_a_session_whose_turns_end_by_the_model_speculates_sooner() -> None:
    """The words must be in when the model answers: the would-be final is queued at
    EOT_SPECULATE_MS of silence, not SPECULATE_MS."""
    asks = Turns(EotRule(threshold=0.5), EOT_SPECULATE_MS=90)
    asks.run(one(), model=lambda job: 0.9)
    silence = Turns(None, EOT_SPECULATE_MS=90)
    silence.run(one())
    speech_end = one().spans[0][1]

    def paused_after_s(h: Turns) -> float:
        [guess] = h.jobs("speculative")
        return guess.t0 + guess.audio_end / 32000 - speech_end

    # 200 ms (SPECULATE_MS) against 90 ms of silence after the same last voiced frame.
    assert abs(paused_after_s(silence) - paused_after_s(asks) - 0.11) < 0.031
