"""One session's logic with its jobs held in memory: numbering, ordering, re-queues, errors by
name, interims that come too late or out of turn, acoustic context, audio clean-up."""

from __future__ import annotations

from typing import Any

import pytest

from common import keys
from common.messages import Job, Result
from gateway.events import Event, SessionFailed
from gateway.jobqueue import MemoryQueue
from gateway.metrics import GatewayMetrics
from gateway.options import SessionOptions
from gateway.protocols.native import render
from gateway.session import Session
from stt.speech import SENTENCES, Speech, conversation
from tests.conftest import make_settings


class Harness:
    def __init__(self, **overrides: Any) -> None:
        # Speculation is tested on its own (test_speculation.py); here each final is its own job.
        overrides.setdefault("SPECULATE_MS", 0)
        self.settings = make_settings("tiny.en", "redis://127.0.0.1:1/0", **overrides)
        self.queue = MemoryQueue()
        self.sent: list[dict[str, Any]] = []  # the events, as the native protocol says them
        self.events: list[Event] = []
        self.metrics = GatewayMetrics()
        self.session = Session(
            self.settings, SessionOptions(sample_rate=16000, lang="en"), self.queue, "gw", self.on_event, self.metrics
        )

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        msg = render(event, want_words=False)
        if msg is not None:
            self.sent.append(msg)

    async def feed(self, speech: Speech) -> None:
        pcm = speech.pcm16
        for i in range(0, len(pcm), 3200):
            await self.session.on_audio(pcm[i : i + 3200])

    def jobs(self, kind: str) -> list[Job]:
        return [j for j in self.queue.jobs if j.kind == kind]

    def answer(self, job: Job, text: str = "", error: str | None = None) -> None:
        result = Result.answering(job, text=text or "utt %d" % job.utt, error=error, audio_s=job.audio_end / 32000)
        self.session.on_result(result)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == kind]

    def dropped(self, reason: str) -> float:
        return float(self.metrics.interims_dropped.labels(reason)._value.get())


@pytest.fixture(scope="module")
def three() -> Speech:
    return conversation(list(SENTENCES[:3]), pause_s=1.2)


async def test_utterances_are_numbered_and_finals_go_out_in_order(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000)
    await h.feed(three)
    finals = h.jobs("final")
    assert [j.utt for j in finals] == [0, 1, 2]
    assert [j.id for j in finals] == [keys.final_job_id(h.session.id, n) for n in range(3)]
    h.answer(finals[2])
    h.answer(finals[1])
    assert h.of_type("final") == []  # held until utterance 0 is resolved
    h.answer(finals[0])
    assert [m["utterance"] for m in h.of_type("final")] == [0, 1, 2]
    h.answer(finals[0], text="a duplicate of a re-queued job")
    assert len(h.of_type("final")) == 3 and h.session.finals_done.is_set()


async def test_a_final_without_result_is_requeued_then_fails_by_name(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000, FINAL_TIMEOUT_S=5.0, MAX_DELIVERIES=2)
    await h.feed(conversation([SENTENCES[0]], tail_s=1.5))
    [final] = h.jobs("final")
    pending = h.session.pending[0]
    pending.queued_at -= 6.0  # FINAL_TIMEOUT_S has passed
    await h.session.tick()
    assert [j.id for j in h.jobs("final")] == [final.id] * 2  # the same job id: the result cache answers it
    await h.session.tick()
    assert h.of_type("error") == []  # the new try has its own FINAL_TIMEOUT_S
    pending.queued_at -= 6.0
    await h.session.tick()
    [error] = h.of_type("error")
    assert error["code"] == "final_failed" and error["utterance"] == 0
    assert h.session.finals_done.is_set()


async def test_a_requeued_final_writes_its_audio_again_and_delivered_audio_is_let_go(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000)
    await h.feed(three)
    finals = h.jobs("final")
    h.answer(finals[0])
    assert h.session.held.of(0) is None, "delivered: its copy is let go"
    key = finals[1].audio_key
    whole = h.queue.audio[key]
    # A failover: the promoted replica lost the newest appends of utterance 1's audio.
    h.queue.audio[key] = whole[: len(whole) // 3]
    await h.session.requeue_pending()
    assert h.queue.audio[key] == whole
    assert [j.id for j in h.jobs("final")].count(finals[1].id) == 2
    h.answer(finals[1])
    h.answer(finals[2])
    assert h.session.held.nbytes == 0 and [m["utterance"] for m in h.of_type("final")] == [0, 1, 2]


async def test_an_error_result_names_its_utterance_and_does_not_hold_the_next(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000)
    await h.feed(three)
    finals = h.jobs("final")
    h.answer(finals[0], error="audio: audio key is missing")
    h.answer(finals[1])
    assert [(m["type"], m["utterance"]) for m in h.sent] == [("error", 0), ("final", 1)]


async def test_interims_too_late_out_of_turn_or_off_their_stable_prefix_are_dropped() -> None:
    h = Harness(INTERIM_MIN_MS=300)
    speech = conversation([SENTENCES[1]], tail_s=0.0)
    pcm = speech.pcm16
    for i in range(0, len(pcm) // 2, 3200):
        await h.session.on_audio(pcm[i : i + 3200])
    first = h.jobs("interim")[0]
    h.answer(first, text="Please call")
    assert h.of_type("interim")[-1]["text"] == "Please call"
    h.answer(first, text="Please call")  # the same rev again: stale
    assert h.dropped("stale") == 1
    await h.session.on_audio(pcm[len(pcm) // 2 : len(pcm) // 2 + 16000])
    second = h.jobs("interim")[1]
    h.answer(second, text="Please call Stella and")
    assert h.of_type("interim")[-1]["stable_chars"] == len("Please call")
    await h.session.on_audio(pcm[len(pcm) // 2 + 16000 : len(pcm) // 2 + 32000])
    third = h.jobs("interim")[2]
    assert third.prefix == "Please call"  # the stable prefix is forced on the next interim
    h.answer(third, text="Police all Stella")
    assert h.dropped("unstable") == 1
    await h.session.finalize()
    h.answer(h.jobs("final")[0])
    h.answer(third, text="Please call Stella and ask")  # after its final: never shown
    assert h.dropped("stale") == 2
    interims = h.of_type("interim")
    assert len(interims) == 2 and all(m["utterance"] == 0 for m in interims)


async def test_the_next_utterances_first_interim_does_not_wait_for_the_last_ones() -> None:
    h = Harness(INTERIM_MIN_MS=300)
    await h.feed(conversation([SENTENCES[0]], tail_s=0.0))
    last = h.jobs("interim")[-1]
    assert h.session.interims.in_flight is not None  # nobody answers: it is still in flight
    await h.feed(conversation([SENTENCES[4]], lead_s=1.2, tail_s=0.0))
    assert [j.utt for j in h.jobs("final")] == [0]
    following = [j for j in h.jobs("interim") if j.utt == 1]
    assert following and following[0].rev == 0, "utterance 1 has its interim while utterance 0's is unanswered"
    h.answer(last, text="The quick brown fox")  # the old one, late: never shown
    assert h.dropped("stale") == 1 and h.of_type("interim") == []
    h.answer(following[0], text="The birch")
    assert [(m["utterance"], m["text"]) for m in h.of_type("interim")] == [(1, "The birch")]


async def test_interims_show_words_not_the_marks_of_a_cut() -> None:
    h = Harness(INTERIM_MIN_MS=300)
    pcm = conversation([SENTENCES[1]], tail_s=0.0).pcm16
    for i in range(0, len(pcm) // 2, 3200):
        await h.session.on_audio(pcm[i : i + 3200])
    h.answer(h.jobs("interim")[0], text=" ...")
    assert h.of_type("interim") == [] and h.dropped("empty") == 1
    await h.session.on_audio(pcm[len(pcm) // 2 : len(pcm) // 2 + 16000])
    h.answer(h.jobs("interim")[1], text="Please call Stella.")
    await h.session.on_audio(pcm[len(pcm) // 2 + 16000 : len(pcm) // 2 + 32000])
    h.answer(h.jobs("interim")[2], text="Please call Stella...")
    await h.session.on_audio(pcm[len(pcm) // 2 + 32000 : len(pcm) // 2 + 48000])
    h.answer(h.jobs("interim")[3], text="Please call Stella")
    # The same words twice make them stable (sent, with stable_chars); a third time says nothing new.
    assert [(m["text"], m["stable_chars"]) for m in h.of_type("interim")] == [
        ("Please call Stella", 0),
        ("Please call Stella", len("Please call Stella")),
    ]
    assert h.dropped("unchanged") == 1


async def test_a_final_is_decoded_after_the_previous_utterance_when_it_was_heard(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000)
    speech = three
    pcm = speech.pcm16
    cut = int((speech.spans[0][1] + 1.0) * 32000) // 2 * 2  # into the pause after sentence 0
    for i in range(0, cut, 3200):
        await h.session.on_audio(pcm[i : min(i + 3200, cut)])
    [first] = h.jobs("final")
    assert first.context_key == "" and first.context_text == ""
    h.answer(first, text="The quick brown fox.")
    for i in range(cut, len(pcm), 3200):
        await h.session.on_audio(pcm[i : i + 3200])
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
    await h.session.tick()
    assert keys.audio_key(h.session.id, 0) not in h.queue.audio
    assert keys.audio_key(h.session.id, 1) in h.queue.audio
    h.answer(third, text="We also need a snake.")
    await h.session.cleanup()
    assert h.queue.audio == {}


async def test_context_is_off_with_context_s_zero(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000, CONTEXT_S=0.0)
    pcm = three.pcm16
    cut = int((three.spans[0][1] + 1.0) * 32000) // 2 * 2
    await h.session.on_audio(pcm[:cut])
    h.answer(h.jobs("final")[0], text="The quick brown fox.")
    await h.session.on_audio(pcm[cut:])
    assert all(j.context_key == "" for j in h.jobs("final"))


async def test_a_final_can_keep_the_stable_prefix() -> None:
    h = Harness(INTERIM_MIN_MS=300, FINAL_KEEPS_STABLE=True)
    pcm = conversation([SENTENCES[1]], tail_s=1.5).pcm16
    for i in range(0, len(pcm) // 3, 3200):
        await h.session.on_audio(pcm[i : i + 3200])
    h.answer(h.jobs("interim")[0], text="Please call Stella")
    await h.session.on_audio(pcm[len(pcm) // 3 : len(pcm) // 3 + 16000])
    h.answer(h.jobs("interim")[1], text="Please call Stella and ask")
    await h.session.on_audio(pcm[len(pcm) // 3 + 16000 :])
    [final] = h.jobs("final")
    assert final.prefix == "Please call Stella"


async def test_resubscribes_count_tries_like_timeouts(three: Speech) -> None:
    """A flapping result subscription re-queues pending finals; each counts a try, so a final
    that never comes still ends as an error naming it after MAX_DELIVERIES."""
    h = Harness(INTERIM_MIN_MS=60000, MAX_DELIVERIES=3)
    await h.feed(conversation([SENTENCES[0]], tail_s=1.5))
    for _ in range(2):
        await h.session.requeue_pending()
    assert len(h.jobs("final")) == 3 and h.of_type("error") == []
    await h.session.requeue_pending()
    [error] = h.of_type("error")
    assert error["code"] == "final_failed" and error["utterance"] == 0 and h.session.finals_done.is_set()


async def test_what_a_session_owes_becomes_errors_by_name_when_it_gives_up(three: Speech) -> None:
    h = Harness(INTERIM_MIN_MS=60000)
    await h.feed(three)
    finals = h.jobs("final")
    h.answer(finals[1])  # utterance 1 is answered but waits for 0
    await h.feed(conversation([SENTENCES[3]], tail_s=0.0))  # utterance 3 is still being spoken
    assert h.session.current is not None
    h.session.abandon("a bug")
    h.session.abandon("twice")  # once is enough
    errors = h.of_type("error")
    assert [e.get("utterance") for e in errors] == [0, 1, 2, 3, None]
    assert errors[-1]["code"] == "internal" and isinstance(h.events[-1], SessionFailed)
    assert h.session.finals_done.is_set() and h.session.broken == "a bug"


def test_held_audio_is_whole_or_not_held() -> None:
    from gateway.heldaudio import HeldAudio

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
