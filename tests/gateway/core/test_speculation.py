"""Speculative finals in one session, jobs held in memory (gateway/core/speculation.py): the final of a
paused speaker decoded before the endpoint, used at once, cancelled when speech goes on, never
used for another decode than the final's."""

from __future__ import annotations

from typing import Any

from common import keys
from common.messages import Job, JobKind, Result
from gateway.core.events import Final
from gateway.core.options import SessionOptions
from stt.speech import SENTENCES, Speech, conversation
from tests.gateway.core.harness import Harness

CHUNK = 960  # 30 ms of 16 kHz PCM16: events land on the frame they belong to


class Spec(Harness):
    def __init__(self, eager_ms: int = 0, interim: bool = True, **overrides: Any) -> None:
        overrides.setdefault("SPECULATE_MS", 200)
        overrides.setdefault("INTERIM_MIN_MS", 60000)
        options = SessionOptions(sample_rate=16000, lang="en", eager_ms=eager_ms, interim=interim)
        super().__init__(options, **overrides)

    def feed_until(self, speech: Speech, done: Any, start: int = 0) -> int:
        """Feed from byte `start` until `done()`; where it stopped."""
        pcm = speech.pcm16
        i = start
        while i < len(pcm) and not done():
            self.push(pcm[i : i + CHUNK])
            i += CHUNK
        return i

    def outcome(self, name: str) -> float:
        return float(self.metrics.speculative.labels(name)._value.get())

    def decode(self, job: Job, text: str) -> Result:
        return Result.answering(job, text=text, audio_s=job.audio_end / 32000, decode_ms=300.0)


def one(tail_s: float = 1.5) -> Speech:
    return conversation([SENTENCES[0]], tail_s=tail_s)


def test_a_result_in_before_the_endpoint_is_the_final_the_moment_it_is_decided() -> None:
    h = Spec()
    speech = one()
    at = h.feed_until(speech, lambda: h.jobs("speculative"))
    [guess] = h.jobs("speculative")
    assert guess.id == keys.speculative_job_id(h.session.id, 0, guess.audio_end)
    h.give(h.decode(guess, "The quick brown fox."))
    assert h.of_type("final") == []  # not before the endpoint
    h.feed_until(speech, lambda: h.of_type("final"), at)
    [final] = h.of_type("final")
    assert final["text"] == "The quick brown fox." and final["utterance"] == 0
    assert h.jobs("final") == []  # nothing left to decode
    assert h.outcome("ready") == 1 and h.outcome("cancelled") == 0
    # It decoded the audio so far: the speech and 200 ms of the silence after it.
    silence = guess.audio_end - int((final["end"] - final["start"]) * 32000)
    assert abs(silence - 200 * 32) <= CHUNK, silence


def test_a_final_queued_under_the_speculative_id_takes_whichever_result_comes_first() -> None:
    h = Spec()
    h.feed_until(one(), lambda: h.jobs("final"))
    [guess], [final] = h.jobs("speculative"), h.jobs("final")
    # The same decode: same id, same audio, context and prompt.
    assert final.id == guess.id and final.audio_end == guess.audio_end and final.kind == JobKind.FINAL
    assert (final.prompt, final.context_key, final.prefix) == (guess.prompt, guess.context_key, guess.prefix)
    h.give(h.decode(guess, "The quick brown fox."))
    h.give(h.decode(guess, "The quick brown fox."))  # the cache's copy, for the final job
    h.give(h.decode(final, "The quick brown fox."))
    assert [m["text"] for m in h.of_type("final")] == ["The quick brown fox."]
    assert h.outcome("awaited") == 1 and h.outcome("discarded") == 0


def test_speech_after_the_pause_cancels_it_and_a_late_result_is_discarded() -> None:
    h = Spec()
    # A 450 ms pause inside the turn (~350 ms unvoiced to the VAD): long enough to speculate, too
    # short to end it (this utterance waits ~640 ms).
    speech = conversation([SENTENCES[0], SENTENCES[1]], pause_s=0.45, tail_s=1.5)
    at = h.feed_until(speech, lambda: h.jobs("speculative"))
    [early] = h.jobs("speculative")
    h.feed_until(speech, lambda: early.id in h.cancelled, at)
    assert h.outcome("cancelled") == 1
    h.give(h.decode(early, "The quick brown fox."))  # decoded anyway, too late
    assert h.of_type("final") == [] and h.outcome("discarded") == 1
    assert float(h.metrics.speculative_wasted._value.get()) == 0.3
    h.feed_until(speech, lambda: False)
    [final] = h.jobs("final")
    assert final.utt == 0 and final.audio_end > early.audio_end and final.id != early.id
    h.answer(final, text="The quick brown fox. Please call Stella.")
    assert [m["utterance"] for m in h.of_type("final")] == [0]


def test_a_speculative_job_whose_final_would_decode_otherwise_is_not_used() -> None:
    h = Spec()
    speech = conversation(list(SENTENCES[:2]), pause_s=1.2)
    at = h.feed_until(speech, lambda: len(h.jobs("speculative")) == 2)
    first, second = h.jobs("speculative")
    final0 = h.jobs("final")[0]
    assert second.context_key == ""  # utterance 0's final is not in yet: no acoustic context
    h.answer(final0, text="The quick brown fox.")  # now it is, and utterance 1's final will use it
    h.feed_until(speech, lambda: False, at)
    final1 = h.jobs("final")[1]
    assert final1.context_key == keys.audio_key(h.session.id, 0)
    assert final1.id == keys.final_job_id(h.session.id, 1) and second.id in h.cancelled
    assert h.outcome("invalid") == 1
    h.give(h.decode(second, "Please call Stella."))
    assert [m["utterance"] for m in h.of_type("final")] == [0]  # the stale guess is not the final
    h.answer(final1, text="Please call Stella.")
    assert [m["utterance"] for m in h.of_type("final")] == [0, 1]
    assert first.id == final0.id  # utterance 0's own guess was the same decode as its final


def test_finalize_after_more_audio_and_the_end_of_a_session_cancel_a_guess_in_flight() -> None:
    h = Spec()
    speech = one()
    at = h.feed_until(speech, lambda: h.jobs("speculative"))
    [guess] = h.jobs("speculative")
    h.push(speech.pcm16[at : at + 3 * CHUNK])  # more silence, then the client ends it
    h.finalize()
    [final] = h.jobs("final")
    assert final.id == keys.final_job_id(h.session.id, 0) and guess.id in h.cancelled
    h2 = Spec()
    h2.feed_until(speech, lambda: h2.jobs("speculative"))
    h2.cleanup()
    assert h2.jobs("speculative")[0].id in h2.cancelled


def test_no_speculation_when_it_is_off_or_the_client_ends_turns() -> None:
    h = Spec(SPECULATE_MS=0)
    h.feed_until(one(), lambda: False)
    assert h.jobs("speculative") == [] and len(h.jobs("final")) == 1


def test_eager_end_of_turn_ends_at_the_speculative_result_when_it_ends_a_sentence() -> None:
    speech = one(tail_s=2.0)
    ends = {}
    for eager, words in ((0, "The quick brown fox."), (250, "The quick brown fox."), (0, "The quick brown fox")):
        h = Spec(eager_ms=eager)
        at = h.feed_until(speech, lambda h=h: h.jobs("speculative"))
        h.give(h.decode(h.jobs("speculative")[0], words))
        h.feed_until(speech, lambda h=h: h.of_type("final"), at)
        [final] = [e for e in h.events if isinstance(e, Final)]
        ends[eager, words[-1]] = final.endpoint_ms
    # Its words are the endpointer's too (a session without interims has no others): a sentence's
    # end brings the silence rule's shortest (400 ms), or the eager one; words that do not end a
    # sentence leave a short utterance its longest.
    assert 390 <= ends[0, "."] <= 450 and 240 <= ends[250, "."] <= 300 and ends[0, "x"] >= 600, ends


def test_a_session_without_interims_speculates_sooner() -> None:
    """Its speculative final's words are the only ones its silence rule weighs: they must be in
    before the shortest end (FINAL_SILENCE_MS_MIN), so its pause is said at EOT_SPECULATE_MS."""
    paused_at = {}
    for interim in (True, False):
        h = Spec(interim=interim, EOT_SPECULATE_MS=90)
        h.feed_until(one(), lambda h=h: h.jobs("speculative"))
        [guess] = h.jobs("speculative")
        paused_at[interim] = guess.audio_end / 32000
    assert abs(paused_at[True] - paused_at[False] - 0.11) < 0.031


def test_a_final_ready_at_the_endpoint_comes_after_its_speech_stopped() -> None:
    """A protocol learns that a turn ended before its transcript (OpenAI's `speech_stopped` and
    `committed`, then `completed` for the same item; before, a ready speculative final was told
    first, and an OpenAI client waited for the committed item's transcript until its idle
    timeout)."""
    h = Spec()
    speech = one()
    at = h.feed_until(speech, lambda: h.jobs("speculative"))
    h.give(h.decode(h.jobs("speculative")[0], "The quick brown fox."))
    h.feed_until(speech, lambda: h.of_type("final"), at)
    names = [type(e).__name__ for e in h.events]
    assert names == ["SpeechStarted", "SpeechStopped", "Final"], names
