"""The session core alone (no Redis, no event loop), its effects carried out in memory: numbering,
ordering, re-queues, errors by name, interims that come too late or out of turn, acoustic
context, audio clean-up, and the order and content of what it records for a resume."""

from __future__ import annotations

from typing import Any

import pytest

from common import keys
from gateway.core.effects import AppendAudio, Emit, Enqueue, Record
from gateway.core.events import SessionFailed
from gateway.core.options import EotRule, SessionOptions
from stt.speech import SENTENCES, Speech, conversation
from tests.gateway.core.harness import Harness


@pytest.fixture(scope="module")
def three() -> Speech:
    return conversation(list(SENTENCES[:3]), pause_s=1.2)


def test_utterances_are_numbered_and_finals_go_out_in_order(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000)
    h.feed(three)
    finals = h.jobs("final")
    assert [j.utt for j in finals] == [0, 1]  # the third waits for its session's turn
    h.answer(finals[1])
    h.tick()
    finals = h.jobs("final")
    assert [j.id for j in finals] == [keys.final_job_id(h.session.id, n) for n in range(3)]
    h.answer(finals[2])
    assert h.of_type("final") == []  # held until utterance 0 is resolved
    h.answer(finals[0])
    assert [m["utterance"] for m in h.of_type("final")] == [0, 1, 2]
    h.answer(finals[0], text="a duplicate of a re-queued job")
    assert len(h.of_type("final")) == 3 and h.session.finals_outstanding == 0


def test_a_session_has_at_most_two_finals_queued_and_the_others_wait_their_turn() -> None:
    """A client ending utterances as fast as it may cannot put a burst of its finals ahead of
    every other session's in the shared stream: two at a time, the next as one is answered."""
    h = Harness(INTERIM_MIN_MS=60000)
    speech = conversation(list(SENTENCES[:5]), pause_s=1.2)
    h.feed(speech)
    assert [j.utt for j in h.jobs("final")] == [0, 1]
    assert h.session.finals_outstanding == 5
    h.answer(h.jobs("final")[0])
    h.tick()
    assert [j.utt for j in h.jobs("final")] == [0, 1, 2]
    h.time.t += 60.0  # a final waiting its turn is not timed out: only those queued are
    h.tick()
    assert [j.utt for j in h.jobs("final")].count(3) == 0
    for n in range(1, 5):
        h.answer(next(j for j in h.jobs("final") if j.utt == n))
        h.tick()
    assert [m["utterance"] for m in h.of_type("final")] == [0, 1, 2, 3, 4]


def test_a_session_gone_for_good_cancels_its_finals_still_owed_and_drops_all_its_audio(three: Speech) -> None:
    """No one will hear them: a decoder drops the cancelled jobs undecoded (a flooding client
    that was refused left seconds of its long utterances' decoding in the queue, ahead of its
    neighbours' finals)."""
    h = Harness(INTERIM_MIN_MS=60000)
    h.feed(three)
    first, second = h.jobs("final")
    h.answer(first)
    h.cleanup()
    assert second.id in h.cancelled and first.id not in h.cancelled
    assert h.audio == {}


def test_a_final_without_result_is_requeued_then_fails_by_name(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000, FINAL_TIMEOUT_S=5.0, MAX_DELIVERIES=2)
    h.feed(conversation([SENTENCES[0]], tail_s=1.5))
    [final] = h.jobs("final")
    h.time.t += 6.0  # FINAL_TIMEOUT_S has passed
    h.tick()
    assert [j.id for j in h.jobs("final")] == [final.id] * 2  # the same job id: the result cache answers it
    h.tick()
    assert h.of_type("error") == []  # the new try has its own FINAL_TIMEOUT_S
    h.time.t += 6.0
    h.tick()
    [error] = h.of_type("error")
    assert error["code"] == "final_failed" and error["utterance"] == 0
    assert h.session.finals_outstanding == 0


def test_a_requeued_final_writes_its_audio_again_and_delivered_audio_is_let_go(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000)
    h.feed(three)
    finals = h.jobs("final")
    h.answer(finals[0])
    assert h.session.held.of(0) is None, "delivered: its copy is let go"
    key = finals[1].audio_key
    whole = h.audio[key]
    # A failover: the promoted replica lost the newest appends of utterance 1's audio.
    h.audio[key] = whole[: len(whole) // 3]
    h.requeue()
    assert h.audio[key] == whole
    assert [j.id for j in h.jobs("final")].count(finals[1].id) == 2
    h.answer(finals[1])
    h.answer(h.jobs("final")[-1])
    assert h.session.held.nbytes == 0 and [m["utterance"] for m in h.of_type("final")] == [0, 1, 2]


def test_an_error_result_names_its_utterance_and_does_not_hold_the_next(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000)
    h.feed(three)
    finals = h.jobs("final")
    h.answer(finals[0], error="audio: audio key is missing")
    h.answer(finals[1])
    assert [(m["type"], m["utterance"]) for m in h.sent] == [("error", 0), ("final", 1)]


def test_interims_too_late_out_of_turn_or_off_their_stable_prefix_are_dropped() -> None:
    h = Harness(INTERIM_MIN_MS=300)
    speech = conversation([SENTENCES[1]], tail_s=0.0)
    pcm = speech.pcm16
    for i in range(0, len(pcm) // 2, 3200):
        h.push(pcm[i : i + 3200])
    first = h.jobs("interim")[0]
    h.answer(first, text="Please call")
    assert h.of_type("interim")[-1]["text"] == "Please call"
    h.answer(first, text="Please call")  # the same rev again: stale
    assert h.dropped("stale") == 1
    h.push(pcm[len(pcm) // 2 : len(pcm) // 2 + 16000])
    second = h.jobs("interim")[1]
    h.answer(second, text="Please call Stella and")
    assert h.of_type("interim")[-1]["stable_chars"] == len("Please call")
    h.push(pcm[len(pcm) // 2 + 16000 : len(pcm) // 2 + 32000])
    third = h.jobs("interim")[2]
    assert third.prefix == "Please call"  # the stable prefix is forced on the next interim
    h.answer(third, text="Police all Stella")
    assert h.dropped("unstable") == 1
    h.finalize()
    h.answer(h.jobs("final")[0])
    h.answer(third, text="Please call Stella and ask")  # after its final: never shown
    assert h.dropped("stale") == 2
    interims = h.of_type("interim")
    assert len(interims) == 2 and all(m["utterance"] == 0 for m in interims)


def test_the_next_utterances_first_interim_does_not_wait_for_the_last_ones() -> None:
    h = Harness(INTERIM_MIN_MS=300)
    h.feed(conversation([SENTENCES[0]], tail_s=0.0))
    last = h.jobs("interim")[-1]
    assert h.session.interims.in_flight is not None  # nobody answers: it is still in flight
    h.feed(conversation([SENTENCES[4]], lead_s=1.2, tail_s=0.0))
    assert [j.utt for j in h.jobs("final")] == [0]
    following = [j for j in h.jobs("interim") if j.utt == 1]
    assert following and following[0].rev == 0, "utterance 1 has its interim while utterance 0's is unanswered"
    h.answer(last, text="The quick brown fox")  # the old one, late: never shown
    assert h.dropped("stale") == 1 and h.of_type("interim") == []
    h.answer(following[0], text="The birch")
    assert [(m["utterance"], m["text"]) for m in h.of_type("interim")] == [(1, "The birch")]


def test_interims_show_words_not_the_marks_of_a_cut() -> None:
    h = Harness(INTERIM_MIN_MS=300)
    pcm = conversation([SENTENCES[1]], tail_s=0.0).pcm16
    for i in range(0, len(pcm) // 2, 3200):
        h.push(pcm[i : i + 3200])
    h.answer(h.jobs("interim")[0], text=" ...")
    assert h.of_type("interim") == [] and h.dropped("empty") == 1
    h.push(pcm[len(pcm) // 2 : len(pcm) // 2 + 16000])
    h.answer(h.jobs("interim")[1], text="Please call Stella.")
    h.push(pcm[len(pcm) // 2 + 16000 : len(pcm) // 2 + 32000])
    h.answer(h.jobs("interim")[2], text="Please call Stella...")
    h.push(pcm[len(pcm) // 2 + 32000 : len(pcm) // 2 + 48000])
    h.answer(h.jobs("interim")[3], text="Please call Stella")
    # The same words twice make them stable (sent, with stable_chars); a third time says nothing new.
    assert [(m["text"], m["stable_chars"]) for m in h.of_type("interim")] == [
        ("Please call Stella", 0),
        ("Please call Stella", len("Please call Stella")),
    ]
    assert h.dropped("unchanged") == 1


def test_a_final_is_decoded_after_the_previous_utterance_when_it_was_heard(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000)
    speech = three
    pcm = speech.pcm16
    cut = int((speech.spans[0][1] + 1.0) * 32000) // 2 * 2  # into the pause after sentence 0
    for i in range(0, cut, 3200):
        h.push(pcm[i : min(i + 3200, cut)])
    [first] = h.jobs("final")
    assert first.context_key == "" and first.context_text == ""
    h.answer(first, text="The quick brown fox.")
    for i in range(cut, len(pcm), 3200):
        h.push(pcm[i : i + 3200])
    second, third = h.jobs("final")[1:]
    assert (second.context_key, second.context_end, second.context_text) == (
        keys.audio_key(h.session.id, 0),
        first.audio_end,
        "The quick brown fox.",
    )
    assert "fox" not in second.prompt  # the context's text is forced, not repeated as prompt
    assert third.context_key == ""  # queued before the final of utterance 1 came back
    # Delivered utterances' audio goes, except the last one's: the next final's context.
    h.answer(second, text="Please call Stella.")
    h.tick()
    assert keys.audio_key(h.session.id, 0) not in h.audio
    assert keys.audio_key(h.session.id, 1) in h.audio
    h.answer(third, text="We also need a snake.")
    h.cleanup()
    assert h.audio == {}


def test_context_is_off_with_context_s_zero(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000, CONTEXT_S=0.0)
    pcm = three.pcm16
    cut = int((three.spans[0][1] + 1.0) * 32000) // 2 * 2
    h.push(pcm[:cut])
    h.answer(h.jobs("final")[0], text="The quick brown fox.")
    h.push(pcm[cut:])
    assert all(j.context_key == "" for j in h.jobs("final"))


def test_a_session_whose_turns_end_by_the_model_has_a_shorter_context(three: Speech) -> None:
    """Its turn's end waits for the final, as does that of a session without interims (its words
    are the silence rule's only ones): the model's session takes at most EOT_MODEL_CONTEXT_S of
    context (none by default), the one without interims EOT_CONTEXT_S (the first sentence is
    ~2.8 s). With interims and no model, CONTEXT_S holds."""
    pcm = three.pcm16
    cut = int((three.spans[0][1] + 1.0) * 32000) // 2 * 2
    contexts = []
    cases: list[tuple[EotRule | None, bool, dict[str, Any]]] = [
        (EotRule(timeout_ms=1000), True, {}),
        (EotRule(timeout_ms=1000), True, {"EOT_MODEL_CONTEXT_S": 6.0}),
        (None, False, {"EOT_CONTEXT_S": 2.0}),
        (None, False, {"EOT_CONTEXT_S": 6.0}),
        (None, True, {"EOT_CONTEXT_S": 2.0, "EOT_MODEL_CONTEXT_S": 0.0}),
    ]
    for eot, interim, limits in cases:
        options = SessionOptions(sample_rate=16000, lang="en", eot=eot, interim=interim)
        h = Harness(options, INTERIM_MIN_MS=60000, **limits)
        h.push(pcm[:cut])
        h.answer(h.jobs("final")[0], text="The quick brown fox.")
        h.push(pcm[cut:])
        contexts.append(h.jobs("final")[1].context_key != "")
    assert contexts == [False, True, False, True, True]


def test_a_final_can_keep_the_stable_prefix() -> None:
    h = Harness(INTERIM_MIN_MS=300, FINAL_KEEPS_STABLE=True)
    pcm = conversation([SENTENCES[1]], tail_s=1.5).pcm16
    for i in range(0, len(pcm) // 3, 3200):
        h.push(pcm[i : i + 3200])
    h.answer(h.jobs("interim")[0], text="Please call Stella")
    h.push(pcm[len(pcm) // 3 : len(pcm) // 3 + 16000])
    h.answer(h.jobs("interim")[1], text="Please call Stella and ask")
    h.push(pcm[len(pcm) // 3 + 16000 :])
    [final] = h.jobs("final")
    assert final.prefix == "Please call Stella"


def test_resubscribes_count_tries_like_timeouts(three: Speech) -> None:
    """A flapping result subscription re-queues pending finals; each counts a try, so a final
    that never comes still ends as an error naming it after MAX_DELIVERIES."""
    h = Harness(INTERIM_MIN_MS=60000, MAX_DELIVERIES=3)
    h.feed(conversation([SENTENCES[0]], tail_s=1.5))
    for _ in range(2):
        h.requeue()
    assert len(h.jobs("final")) == 3 and h.of_type("error") == []
    h.requeue()
    [error] = h.of_type("error")
    assert error["code"] == "final_failed" and error["utterance"] == 0 and h.session.finals_outstanding == 0


def test_what_a_session_owes_becomes_errors_by_name_when_it_gives_up(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000)
    h.feed(three)
    finals = h.jobs("final")
    h.answer(finals[1])  # utterance 1 is answered but waits for 0
    h.feed(conversation([SENTENCES[3]], tail_s=0.0))  # utterance 3 is still being spoken
    assert h.session.current is not None
    h.abandon("a bug")
    h.abandon("twice")  # once is enough
    errors = h.of_type("error")
    assert [e.get("utterance") for e in errors] == [0, 1, 2, 3, None]
    assert errors[-1]["code"] == "internal" and isinstance(h.events[-1], SessionFailed)
    assert h.session.finals_outstanding == 0 and h.session.broken == "a bug"


def test_held_audio_is_whole_or_not_held() -> None:
    from gateway.core.held import HeldAudio

    held = HeldAudio()
    held.add(0, b"ab", 0)
    held.add(0, b"cd", 2)
    held.add(0, b"CD", 2)  # written again at its offset (a retried write)
    assert held.of(0) == b"abCD"
    # A session taken over mid-utterance: its first bytes were the other gateway's. A copy of
    # the rest written at offset 0 would corrupt the key, so there is none.
    held.add(1, b"ef", 4)
    held.add(1, b"gh", 6)
    assert held.of(1) is None
    held.release(0, 1)
    assert held.nbytes == 0
    held.add(1, b"ij", 0)  # the number reused after a release starts afresh
    assert held.of(1) == b"ij"


def test_effects_come_in_the_order_they_must_be_done(three: Speech) -> None:
    """Audio before the job that names it; the record of a pending final before its job (a gateway
    taking over queues it again); what the client is told before the record (which never says
    more was delivered than was logged)."""
    h = Harness(INTERIM_MIN_MS=60000, resumable=True)
    h.feed(three)
    for i, e in enumerate(h.effects):
        if isinstance(e, Enqueue):
            before = h.effects[:i]
            appended = sum(len(a.pcm) for a in before if isinstance(a, AppendAudio) and a.utt == e.job.utt)
            assert appended >= e.job.audio_end
            records = [r for r in before if isinstance(r, Record) and "pending:%d" % e.job.utt in r.fields]
            assert records, "final %d queued before it was recorded" % e.job.utt
    h.answer(h.jobs("final")[0])
    assert [type(e.event).__name__ for e in h.effects[-1:] if isinstance(e, Emit)] == ["Final"]
    h.tick()
    assert h.state["pending:1"] and "pending:0" in h.state  # a tick records no deletion by itself
    h.apply([Record(h.session.snapshot())])
    assert "pending:0" not in h.state and '"next_final":1' in h.state["core"]


def test_a_session_not_resumable_records_nothing(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000)
    h.feed(three)
    assert not [e for e in h.effects if isinstance(e, Record)] and h.state == {}


def test_the_recorded_position_is_audio_that_is_held(three: Speech) -> None:
    """At every record, the position a resuming client sends audio again from is no later than
    what the open utterance's key holds (nothing said is lost) and no earlier than its start."""
    h = Harness(INTERIM_MIN_MS=60000, resumable=True)
    pcm = three.pcm16
    for i in range(0, len(pcm), 3200):
        for e in h.push(pcm[i : i + 3200]):
            if not isinstance(e, Record):
                continue
            pos = int(e.fields["pos"])
            assert pos <= (i + 3200) // 2
            current = h.session.current
            if current is not None:
                held = current.start_sample + len(h.audio[keys.audio_key(h.session.id, current.n)]) // 2
                assert pos == held
