"""The decoder's priority policy (decoder/scheduler.py), with no Redis and no model."""

from __future__ import annotations

import itertools

from common.messages import Job, JobKind
from decoder.scheduler import Lane, Scheduler, TimeShare
from decoder.streams import Entry

_ids = itertools.count(1)


def entry(kind: JobKind, session: str = "a", utt: int = 0, rev: int = 0, deadline: int = 0) -> Entry:
    n = next(_ids)
    job = Job(
        id="%s:%d:%s%d" % (session, utt, kind, rev),
        kind=kind,
        session=session,
        gateway="g",
        utt=utt,
        rev=rev,
        audio_key="k",
        audio_end=2,
        deadline=deadline,
    )
    return Entry(stream="s", entry_id="1-%d" % n, raw=b"", job=job)


def final(session: str = "a", utt: int = 0) -> Entry:
    return entry(JobKind.FINAL, session, utt)


def guess(session: str = "a", utt: int = 0, deadline: int = 10_000) -> Entry:
    return entry(JobKind.SPECULATIVE, session, utt, deadline=deadline)


def interim(session: str = "a", rev: int = 0, utt: int = 0, deadline: int = 10_000) -> Entry:
    return entry(JobKind.INTERIM, session, utt, rev, deadline)


def part(n: int = 0) -> Entry:
    return entry(JobKind.BATCH, "file", n)


def sessions(entries: list[Entry]) -> list[str]:
    return [e.job.session for e in entries]


def run_of(s: Scheduler, lane: Lane, now: int = 0) -> list[Entry]:
    plan = s.next_run(lane, now)
    return plan.run.entries if plan.run else []


# --- the final lane ------------------------------------------------------------------------


def test_finals_go_before_speculative_jobs_and_speculation_fills_the_room_they_leave() -> None:
    s = Scheduler(batch=3, file_share=0.25)
    g1, f1, g2, f2 = guess("x"), final("y"), guess("z"), final("w")
    s.add([g1, f1, g2, f2], now_ms=0)
    assert run_of(s, Lane.FINAL) == [f1, f2, g1]
    assert run_of(s, Lane.FINAL) == [g2]
    assert run_of(s, Lane.FINAL) == []


def test_speculation_waits_while_any_final_does() -> None:
    s = Scheduler(batch=2, file_share=0.25)
    finals = [final(str(i)) for i in range(3)]
    g = guess("x")
    s.add([g, *finals], now_ms=0)
    assert run_of(s, Lane.FINAL) == finals[:2]
    # One final is left and there is room for one more: still no speculation beside it... the
    # final goes first, the speculative job only in a run with no final waiting behind it.
    assert run_of(s, Lane.FINAL) == [finals[2], g]


def test_speculation_past_its_deadline_is_shed_undecoded() -> None:
    s = Scheduler(batch=4, file_share=0.25)
    old, fresh = guess("a", deadline=100), guess("b", deadline=1000)
    s.add([old, fresh], now_ms=0)
    plan = s.next_run(Lane.FINAL, now_ms=500)
    assert plan.dropped == {"shed": [old]}
    assert plan.run is not None and plan.run.entries == [fresh]


def test_no_session_gets_a_second_final_before_every_waiting_session_got_one() -> None:
    s = Scheduler(batch=2, file_share=0.25)
    s.add([final("a", 0), final("a", 1), final("a", 2), final("b", 0)], now_ms=0)
    assert sessions(run_of(s, Lane.FINAL)) == ["a", "b"]
    assert [e.job.utt for e in run_of(s, Lane.FINAL)] == [1, 2]


def test_a_final_put_back_goes_first() -> None:
    s = Scheduler(batch=1, file_share=0.25)
    waiting, back = final("a"), final("b")
    s.add([waiting], now_ms=0)
    s.put_back([back])
    assert run_of(s, Lane.FINAL) == [back]


def test_what_a_free_lane_reads() -> None:
    s = Scheduler(batch=2, file_share=0.25)
    assert s.wants(Lane.FINAL) == (JobKind.FINAL, JobKind.SPECULATIVE)
    assert s.wants(Lane.BACKGROUND) == (JobKind.INTERIM, JobKind.BATCH)
    s.add([guess(), guess(), interim("a"), interim("b"), part()], now_ms=0)
    # Finals are always read: a held speculative job must not go before a newer final.
    assert s.wants(Lane.FINAL) == (JobKind.FINAL,)
    assert s.wants(Lane.BACKGROUND) == (JobKind.BATCH,)


# --- the background lane: interims ----------------------------------------------------------


def test_stale_and_superseded_interims_are_dropped() -> None:
    s = Scheduler(batch=4, file_share=0.25)
    a0, a1, b = interim("a", 0), interim("a", 1), interim("b", deadline=5)
    s.add([a0, a1, b], now_ms=0)
    plan = s.next_run(Lane.BACKGROUND, now_ms=100)
    assert plan.run is not None and plan.run.entries == [a1]
    assert plan.dropped == {"superseded": [a0], "stale_dropped": [b]}


def test_no_session_served_twice_before_others() -> None:
    s = Scheduler(batch=1, file_share=0.25)
    s.add([interim("a"), interim("b")], now_ms=0)
    assert sessions(run_of(s, Lane.BACKGROUND)) == ["a"]
    s.add([interim("a", rev=1)], now_ms=0)
    # b waited while a was served: b goes next even though a's new interim is there too.
    assert sessions(run_of(s, Lane.BACKGROUND)) == ["b"]
    assert sessions(run_of(s, Lane.BACKGROUND)) == ["a"]


def test_an_utterances_first_interim_goes_before_later_revisions() -> None:
    s = Scheduler(batch=3, file_share=0.25)
    s.add([interim("a"), interim("b")], now_ms=0)
    run_of(s, Lane.BACKGROUND)  # both served once: a before b
    s.add([interim("a", rev=4), interim("b", utt=1, rev=0), interim("c", rev=2)], now_ms=0)
    # b's new utterance has no interim yet: it goes first, then least recently served first.
    assert sessions(run_of(s, Lane.BACKGROUND)) == ["b", "c", "a"]


def test_on_a_cpu_the_final_lane_runs_one_job_and_reads_no_more_than_one() -> None:
    # Six sentences ending together on two CPU decoders: a run of four there takes four times
    # one, and all four results wait for its end; what one decoder does not read, the other takes.
    cpu = Scheduler(batch=4, file_share=0.25, cpu=True)
    f1, g1, g2 = final("a"), guess("b"), guess("c")
    cpu.add([g1, f1, g2], now_ms=0)
    assert run_of(cpu, Lane.FINAL) == [f1]
    assert run_of(cpu, Lane.FINAL) == [g1]
    assert cpu.read_count([Lane.FINAL, Lane.BACKGROUND]) == 1
    assert cpu.read_count([Lane.BACKGROUND]) == 4  # interims still come in runs
    assert JobKind.SPECULATIVE not in cpu.wants(Lane.FINAL)  # g2 held: no more guesses read
    gpu = Scheduler(batch=4, file_share=0.25, cpu=False)
    gpu.add([final("a"), guess("b"), guess("c")], now_ms=0)
    assert len(run_of(gpu, Lane.FINAL)) == 3
    assert gpu.read_count([Lane.FINAL, Lane.BACKGROUND]) == 4


# --- the background lane: file parts --------------------------------------------------------


def test_file_parts_run_whenever_no_interim_waits() -> None:
    s = Scheduler(batch=4, file_share=0.25, cpu=False)
    parts = [part(i) for i in range(3)]
    s.add(parts, now_ms=0)
    assert run_of(s, Lane.BACKGROUND, 100_000) == parts


def test_while_live_sessions_run_on_a_cpu_a_file_run_is_one_part() -> None:
    s = Scheduler(batch=4, file_share=0.25, cpu=True)
    s.add([part(0), part(1)], now_ms=0)
    s.add([final()], now_ms=1000)  # a live session
    assert len(run_of(s, Lane.BACKGROUND, 2000)) == 1
    # Live work long gone: the whole batch.
    s.add([part(2), part(3)], now_ms=0)
    assert len(run_of(s, Lane.BACKGROUND, 60_000)) == 3


def test_file_parts_get_their_share_of_the_lanes_time_not_of_its_runs() -> None:
    s = Scheduler(batch=1, file_share=0.25)
    now = 0
    s.add([part(i) for i in range(50)], now_ms=now)
    spent = {JobKind.INTERIM: 0.0, JobKind.BATCH: 0.0}
    for i in range(400):
        s.add([interim("s%d" % i, deadline=now + 10_000)], now_ms=now)
        plan = s.next_run(Lane.BACKGROUND, now)
        assert plan.run is not None
        # A part costs 20 times an interim: by runs files would take 25% of the runs, ~87% of the time.
        cost = 2.0 if plan.run.kind == JobKind.BATCH else 0.1
        spent[plan.run.kind] += cost
        now += int(cost * 1000)
        s.ran(plan.run, cost, now)
    share = spent[JobKind.BATCH] / sum(spent.values())
    assert 0.2 < share < 0.32, share


def test_time_share_forgets_old_runs() -> None:
    t = TimeShare(half_life_s=10.0)
    t.add(JobKind.BATCH, 10.0, now_ms=1)
    t.add(JobKind.INTERIM, 10.0, now_ms=1)
    assert abs(t.share(JobKind.BATCH, now_ms=1) - 0.5) < 1e-9
    t.add(JobKind.INTERIM, 10.0, now_ms=100_001)  # 100 s later: the old seconds count ~1/1000
    assert t.share(JobKind.BATCH, now_ms=100_001) < 0.01


def test_drain_returns_everything_held() -> None:
    s = Scheduler(batch=2, file_share=0.25)
    held = [final(), guess(), interim(), part()]
    s.add(held, now_ms=0)
    assert sorted(e.entry_id for e in s.drain()) == sorted(e.entry_id for e in held)
    assert all(s.held(k) == 0 for k in JobKind)
