"""A session's driver: it carries out its core's effects in order (against jobs held in memory
here), serializes its steps, and is where a failure of the session is handled: taken over
elsewhere (it goes quiet), or a bug (what it owes becomes errors naming each utterance)."""

from __future__ import annotations

from typing import Any

from common.messages import JobKind, Result
from gateway.core.events import Event, Final, FinalFailed, SessionFailed, SpeechStopped
from gateway.core.options import SessionOptions
from gateway.core.session import Session
from gateway.metrics import GatewayMetrics
from gateway.store.jobqueue import MemoryQueue
from gateway.store.journal import Fenced
from gateway.transport.driver import FENCED, SessionDriver
from stt.speech import SENTENCES, conversation
from tests.conftest import make_settings


class Outlet:
    def __init__(self) -> None:
        self.records: list[dict[str, str]] = []
        self.fail: BaseException | None = None

    async def record(self, fields: dict[str, str]) -> None:
        if self.fail is not None:
            raise self.fail
        self.records.append(fields)


def driver(**overrides: Any) -> tuple[SessionDriver, MemoryQueue, Outlet, list[Event]]:
    overrides = {"SPECULATE_MS": 0, "INTERIM_MIN_MS": 60000, **overrides}
    settings = make_settings("tiny.en", "redis://127.0.0.1:1/0", **overrides)
    core = Session(settings, SessionOptions(sample_rate=16000, lang="en"), "gw", GatewayMetrics(), resumable=True)
    queue, outlet = MemoryQueue(), Outlet()
    events: list[Event] = []
    return SessionDriver(core, queue, outlet, events.append), queue, outlet, events


async def feed(d: SessionDriver, pcm: bytes) -> None:
    for i in range(0, len(pcm), 3200):
        await d.feed(pcm[i : i + 3200])


async def test_effects_reach_the_queue_in_order_and_the_lease_is_renewed() -> None:
    d, queue, outlet, _ = driver()
    await feed(d, conversation([SENTENCES[0]], tail_s=0.0).pcm16)
    assert await d.finalize() is True and await d.finalize() is False  # nothing open the second time
    [final] = queue.jobs
    audio, _ = queue.audio_of(final)
    assert len(audio) == final.audio_end  # appended before it was queued
    assert any(f"pending:{final.utt}" in r for r in outlet.records)
    assert not d.finals_done.is_set() and await d.tick()
    assert outlet.records[-1]["connected"] == "1" and int(outlet.records[-1]["lease"]) > 0


async def test_a_result_that_comes_during_a_step_speaks_after_it() -> None:
    """The speculative result lands while the step that ends its utterance awaits its record:
    the client hears that speech stopped before it hears the final (OpenAI's `speech_stopped`
    and `committed` come before `completed`, and clients count on it), and the session's end
    (`done`) waits until the final is out."""
    d, queue, outlet, events = driver(SPECULATE_MS=200)
    record = outlet.record

    async def racing_record(fields: dict[str, str]) -> None:
        [guess] = [j for j in queue.jobs if j.kind == JobKind.SPECULATIVE]
        if d.core.pending and not any(isinstance(e, Final) for e in events):
            d.on_result(Result.answering(guess, text="The quick brown fox.", audio_s=guess.audio_end / 32000))
            assert not any(isinstance(e, Final) for e in events)  # held until the step's own are out
            # ...and so is the word that no final is outstanding: a drain waiting on it would
            # send `done` before the final it holds.
            assert not d.finals_done.is_set()
        await record(fields)

    await feed(d, conversation([SENTENCES[0]], tail_s=0.4).pcm16)
    assert [j.kind for j in queue.jobs] == [JobKind.SPECULATIVE]
    outlet.record = racing_record  # type: ignore[method-assign]
    await feed(d, bytes(32000))
    ends = [e for e in events if isinstance(e, (SpeechStopped, Final))]
    assert [type(e) for e in ends] == [SpeechStopped, Final]
    assert [e.text for e in ends if isinstance(e, Final)] == ["The quick brown fox."]
    assert d.finals_done.is_set() and not d.held


async def test_a_session_taken_over_elsewhere_goes_quiet() -> None:
    d, _, outlet, events = driver()
    await feed(d, conversation([SENTENCES[0]], tail_s=1.5).pcm16)
    outlet.fail = Fenced("s")
    assert await d.tick() is False
    assert d.broken == FENCED and not [e for e in events if isinstance(e, (FinalFailed, SessionFailed))]


async def test_a_bug_in_a_step_ends_the_session_with_what_it_owes_as_errors() -> None:
    d, _, outlet, events = driver()
    await feed(d, conversation([SENTENCES[0], SENTENCES[1]], pause_s=1.2, tail_s=0.0).pcm16)
    outlet.fail = RuntimeError("a bug")
    assert await d.tick() is False
    failed = [e.utt for e in events if isinstance(e, FinalFailed)]
    assert failed == [0, 1] and isinstance(events[-1], SessionFailed) and d.finals_done.is_set()


def test_the_end_of_turn_model_is_used_where_eot_model_says() -> None:
    from gateway.transport.process import GatewayState

    cpu = {"turn": "1", "device": "cpu:0"}
    gpu = {"turn": "1", "device": "cuda:0"}
    none = {"turn": "0", "device": "cuda:1"}
    for mode, decoders, used in (
        ("auto", [cpu], False),  # auto: only where a GPU decoder serves it
        ("auto", [cpu, gpu], True),
        ("auto", [none], False),
        ("on", [cpu], True),
        ("on", [none], False),
        ("off", [gpu], False),
    ):
        state = GatewayState(make_settings("tiny.en", "redis://127.0.0.1:1/0", EOT_MODEL=mode))
        state.decoders = decoders
        assert state.turn_model is used, (mode, decoders)
