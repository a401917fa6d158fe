"""benchmarks/turn_timeline.py on lines logged with the service's own messages, which are held to
the modules that log them: a changed message fails here rather than leaving the tool to count
nothing."""

from __future__ import annotations

import logging

import pytest

from benchmarks.turn_timeline import events, timeline
from tests.conftest import ROOT

# (the module that logs it, its message, arguments for one utterance)
MESSAGES = [
    ("gateway/core/speculation.py", "session %s utt %d: speculative final %s queued", ("abc", 3, "abc:3:s9600")),
    ("decoder/delivery.py", "job %s (session %s utt %d) decoded in %.0f ms", ("abc:3:s9600", "abc", 3, 250.0)),
    (
        "decoder/turns.py",
        "job %s (session %s utt %d): end of turn %s in %.0f ms, %.0f ms after it was asked",
        ("abc:3:t11200", "abc", 3, "0.93", 50.0, 55.0),
    ),
    ("gateway/core/finals.py", "session %s utt %d: final delivered %.0f ms after end of speech", ("abc", 3, 0.0)),
]


@pytest.mark.parametrize("module, message", [(m, msg) for m, msg, _ in MESSAGES])
def test_the_messages_it_reads_are_the_services(module: str, message: str) -> None:
    assert '"%s"' % message in (ROOT / module).read_text()


def test_one_utterance_in_order(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        for _, message, args in MESSAGES:
            logging.getLogger("t").debug(message, *args)
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    found = events(fmt.format(r) for r in caplog.records)
    assert [name for _, name, _ in found[("abc", 3)]] == ["queued", "decoded", "answer", "delivered"]
    shown = timeline(found[("abc", 3)])
    assert shown is not None
    assert "decoded" in shown[0] and "(250 ms)" in shown[0] and "answer 0.93" in shown[0] and "(55 ms)" in shown[0]


@pytest.mark.parametrize("decoded_at, answered_at, waited", [(0.1, 0.2, "answer"), (0.3, 0.2, "words")])
def test_what_the_turn_waited_for(decoded_at: float, answered_at: float, waited: str) -> None:
    t0 = 1000.0  # the end of speech: the final went out 310 ms after it
    utterance = [
        (t0 + 0.03, "queued", ()),
        (t0 + decoded_at, "decoded", ("200",)),
        (t0 + answered_at, "answer", ("0.9", "50")),
        (t0 + 0.31, "delivered", ("310",)),
    ]
    shown = timeline(sorted(utterance))
    assert shown is not None
    assert shown[1] == waited
    assert "queued +30" in shown[0] and "delivered +310" in shown[0]


def test_an_answer_after_the_final_is_not_what_the_turn_waited_for() -> None:
    t0 = 1000.0
    utterance = [
        (t0 + 0.2, "decoded", ("150",)),
        (t0 + 0.45, "delivered", ("450",)),
        (t0 + 0.6, "answer", ("0.2", "50")),
    ]
    shown = timeline(utterance)
    assert shown is not None
    assert shown[1] == "words" and "answer" not in shown[0]


def test_an_utterance_without_a_final_is_not_shown() -> None:
    assert timeline([(0.0, "queued", ())]) is None
