from __future__ import annotations

from common.messages import Job
from decoder.fairness import InterimQueue
from decoder.streams import Entry


def entry(session: str, rev: int = 0, utt: int = 0, deadline: int = 10_000, n: int = 0) -> Entry:
    job = Job(
        id="%s:%d:i%d" % (session, utt, rev),
        kind="interim",
        session=session,
        gateway="g",
        utt=utt,
        rev=rev,
        audio_key="k",
        audio_end=2,
        deadline=deadline,
    )
    return Entry(stream="stt:jobs:interim", entry_id="1-%d" % n, raw=b"", job=job)


def test_stale_and_superseded_are_dropped() -> None:
    q = InterimQueue()
    q.add([entry("a", 0, n=1), entry("a", 1, n=2), entry("b", deadline=5, n=3)])
    sel = q.take(4, now_ms=100)
    assert [e.job.rev for e in sel.chosen] == [1]  # type: ignore[union-attr]
    assert [e.job.session for e in sel.stale] == ["b"]  # type: ignore[union-attr]
    assert [e.job.rev for e in sel.superseded] == [0]  # type: ignore[union-attr]


def test_no_session_served_twice_before_others() -> None:
    q = InterimQueue()
    q.add([entry("a", n=1), entry("b", n=2)])
    assert [e.job.session for e in q.take(1, 0).chosen] == ["a"]  # type: ignore[union-attr]
    q.add([entry("a", rev=1, n=3)])
    # b waited while a was served: b goes next even though a's new interim is there too.
    assert [e.job.session for e in q.take(1, 0).chosen] == ["b"]  # type: ignore[union-attr]
    assert [e.job.session for e in q.take(1, 0).chosen] == ["a"]  # type: ignore[union-attr]


def test_an_utterances_first_interim_goes_before_later_revisions() -> None:
    q = InterimQueue()
    q.add([entry("a", n=1), entry("b", n=2)])
    q.take(2, 0)  # both served once: a before b
    q.add([entry("a", rev=4, n=3), entry("b", utt=1, rev=0, n=4), entry("c", rev=2, n=5)])
    # b's new utterance has no interim yet: it goes first, then least recently served first.
    assert [e.job.session for e in q.take(3, 0).chosen] == ["b", "c", "a"]  # type: ignore[union-attr]
