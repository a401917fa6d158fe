"""What a decoder decodes next, on which lane: the whole priority policy, and nothing else.

Pure: no Redis, no threads, no clock of its own (the caller passes the time). The worker
(decoder/worker.py) reads jobs, hands them here, asks for the next run of a lane that is free,
and reports how long background runs took.

Two lanes, each decoding one run (a list of jobs decoded together) at a time:

- The final lane: finals first, oldest first, and no session's second final in a run before
  every waiting session's first. Then speculative finals (the would-be final of an utterance
  whose speaker has paused), oldest first, in the room the finals leave in a run. A speculative
  job only ever runs when no real final waits here, so it delays a final by at most the one run
  in progress (a decode cannot be interrupted). It is shed, undecoded, past its deadline (the
  gateway sets it just after the latest its endpoint can be decided): by then its final, if
  the speaker did not go on, stands in the final queue, which goes first. Under load that is what gives way
  first: while finals keep the lane busy, speculation waits and ages out. On a CPU a run is one
  job (`run_size`), and no more is read than a run takes: the rest stays for another decoder.
- The background lane: interims and file parts. Of several waiting interims of one session only
  the newest is worth decoding (the others are superseded); an interim past its deadline is
  dropped; an utterance's first interim (rev 0) goes before later revisions of others (it tells
  a speaker they are heard; a later one only refines words already shown); then the session
  served least recently. When both interims and file parts wait, file parts get `file_share`
  of the lane's *time* (recent runs count most): a 20 s part weighs what it costs, not what a
  0.3 s interim does. While live sessions run on a CPU a file run is one part, so the interims
  behind it wait for one part's decode, not a whole batch of them.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from common.messages import JobKind
from decoder.streams import Entry

LIVE_QUIET_MS = 5000  # live jobs this recent mean live sessions
SHARE_HALF_LIFE_S = 60.0  # how fast the background lane forgets what it spent its time on
MEMORY = 10000  # sessions remembered for fairness (the longest gone are forgotten first)


class Lane(enum.StrEnum):
    FINAL = "final"
    BACKGROUND = "background"


def lane_of(kind: JobKind) -> Lane:
    return Lane.FINAL if kind.decodes_as_final else Lane.BACKGROUND


@dataclass
class Run:
    """Jobs to decode together on one lane (one kind each, but a final-lane run may mix finals
    and speculative finals: both decode as finals)."""

    lane: Lane
    entries: list[Entry]

    @property
    def kind(self) -> JobKind:
        """The run's kind for its lane's purposes: a background run is all interims or all file
        parts; a final-lane run is named by its first job."""
        return self.entries[0].kind


@dataclass
class Plan:
    """The next run of a lane (if any), and entries dropped undecoded, by reason."""

    run: Run | None = None
    dropped: dict[str, list[Entry]] = field(default_factory=dict)

    def drop(self, reason: str, entries: list[Entry]) -> None:
        if entries:
            self.dropped.setdefault(reason, []).extend(entries)


class Served:
    """When each session was last served on a lane: the least recently served goes first."""

    def __init__(self) -> None:
        self._at: dict[str, int] = {}
        self._tick = itertools.count(1)

    def __getitem__(self, session: str) -> int:
        return self._at.get(session, 0)

    def mark(self, entries: list[Entry]) -> None:
        for e in entries:
            self._at[e.job.session] = next(self._tick)
        if len(self._at) > MEMORY:
            # Sessions long gone would sort first anyway if they came back.
            self._at = dict(sorted(self._at.items(), key=lambda kv: kv[1])[-MEMORY // 2 :])


class TimeShare:
    """Seconds a lane spent on each kind, decayed so recent runs count most."""

    def __init__(self, half_life_s: float = SHARE_HALF_LIFE_S) -> None:
        self.half_life_s = half_life_s
        self.spent: dict[JobKind, float] = {}
        self._at_ms = 0

    def _decay(self, now_ms: int) -> None:
        if self._at_ms and now_ms > self._at_ms:
            factor = 0.5 ** ((now_ms - self._at_ms) / 1000.0 / self.half_life_s)
            self.spent = {k: v * factor for k, v in self.spent.items()}
        self._at_ms = max(self._at_ms, now_ms)

    def add(self, kind: JobKind, seconds: float, now_ms: int) -> None:
        self._decay(now_ms)
        self.spent[kind] = self.spent.get(kind, 0.0) + max(0.0, seconds)

    def share(self, kind: JobKind, now_ms: int) -> float:
        """`kind`'s share of the recent time (0 when nothing was spent yet)."""
        self._decay(now_ms)
        total = sum(self.spent.values())
        return self.spent.get(kind, 0.0) / total if total > 0 else 0.0


class Scheduler:
    def __init__(self, batch: int, file_share: float, cpu: bool = False) -> None:
        self.batch = batch
        self.file_share = file_share
        self.cpu = cpu
        self.finals: list[Entry] = []
        self.guesses: list[Entry] = []
        self.interims: list[Entry] = []
        self.files: list[Entry] = []
        self.background = TimeShare()
        self._served = {Lane.FINAL: Served(), Lane.BACKGROUND: Served()}
        self._last_live_ms = -LIVE_QUIET_MS

    # --- what is held ---------------------------------------------------------------------

    def add(self, entries: list[Entry], now_ms: int) -> None:
        """Jobs read (or claimed) and not yet decoded."""
        held = {
            JobKind.FINAL: self.finals,
            JobKind.SPECULATIVE: self.guesses,
            JobKind.INTERIM: self.interims,
            JobKind.BATCH: self.files,
        }
        for e in entries:
            held[e.kind].append(e)
            if e.kind is not JobKind.BATCH:
                self._last_live_ms = now_ms

    def put_back(self, entries: list[Entry]) -> None:
        """Finals the worker could not run after all (another decoder was decoding them and has
        stopped): first in line again."""
        self.finals[:0] = entries

    def held(self, kind: JobKind) -> int:
        """Jobs of `kind` held (none of a kind it does not schedule: turn questions)."""
        held = {
            JobKind.FINAL: self.finals,
            JobKind.SPECULATIVE: self.guesses,
            JobKind.INTERIM: self.interims,
            JobKind.BATCH: self.files,
        }
        return len(held.get(kind, []))

    def run_size(self, lane: Lane) -> int:
        """The most jobs of a final-lane run: one on a CPU, where a run of four tiny.en finals
        took four times one (benchmarks/turns.py: six sentences ending together on two decoders
        came two at 0.45 s and four together at 1.8 s) and every result waits for the run's last;
        jobs left in Redis go to whichever decoder is free first."""
        return 1 if lane is Lane.FINAL and self.cpu else self.batch

    def read_count(self, free: list[Lane]) -> int:
        """How many entries of each kind to read when `free` lanes are free: no more final-lane
        jobs than one run takes, so that another decoder gets the rest."""
        return min(self.run_size(lane) for lane in free) if free else self.batch

    def wants(self, lane: Lane) -> tuple[JobKind, ...]:
        """The kinds worth reading for `lane` when it is free: those it holds fewer than a run of.
        Finals are always worth reading: a speculative job held must not go before a newer final."""
        if lane is Lane.FINAL:
            return (JobKind.FINAL,) + ((JobKind.SPECULATIVE,) if len(self.guesses) < self.run_size(lane) else ())
        kinds: tuple[JobKind, ...] = ()
        if len(self.interims) < self.batch:
            kinds += (JobKind.INTERIM,)
        if len(self.files) < self.batch:
            kinds += (JobKind.BATCH,)
        return kinds

    def waiting(self) -> list[Entry]:
        """Everything held and not yet run."""
        return self.finals + self.guesses + self.interims + self.files

    def drain(self) -> list[Entry]:
        """Everything held (the worker is stopping)."""
        out = self.waiting()
        self.finals, self.guesses, self.interims, self.files = [], [], [], []
        return out

    # --- the next run ---------------------------------------------------------------------

    def next_run(self, lane: Lane, now_ms: int) -> Plan:
        return self._final_lane(now_ms) if lane is Lane.FINAL else self._background_lane(now_ms)

    def _final_lane(self, now_ms: int) -> Plan:
        plan = Plan()
        fresh = []
        for e in self.guesses:
            if e.job.deadline and e.job.deadline < now_ms:
                plan.drop("shed", [e])
            else:
                fresh.append(e)
        self.guesses = fresh
        size = self.run_size(Lane.FINAL)
        chosen = self._fair(self.finals, Lane.FINAL, size)
        self.finals = [e for e in self.finals if e not in chosen]
        if len(chosen) < size and not self.finals:
            room = size - len(chosen)
            chosen += self.guesses[:room]
            self.guesses = self.guesses[room:]
        if chosen:
            self._served[Lane.FINAL].mark(chosen)
            plan.run = Run(Lane.FINAL, chosen)
        return plan

    def _fair(self, entries: list[Entry], lane: Lane, limit: int) -> list[Entry]:
        """Up to `limit` of `entries`, oldest first, but each session's n-th only after every
        waiting session's (n-1)-th, the least recently served session first among equals."""
        served = self._served[lane]
        rank: dict[str, int] = {}
        keyed = []
        for i, e in enumerate(entries):
            nth = rank.get(e.job.session, 0)
            rank[e.job.session] = nth + 1
            keyed.append(((nth, served[e.job.session] if nth == 0 else 0, i), e))
        return [e for _, e in sorted(keyed, key=lambda ke: ke[0])[:limit]]

    def _background_lane(self, now_ms: int) -> Plan:
        plan = Plan()
        self.interims = self._live_interims(plan, now_ms)
        if self.files and (not self.interims or self._files_turn(now_ms)):
            live = now_ms - self._last_live_ms < LIVE_QUIET_MS
            size = 1 if live and self.cpu else self.batch
            chosen, self.files = self.files[:size], self.files[size:]
            plan.run = Run(Lane.BACKGROUND, chosen)
            return plan
        if self.interims:
            served = self._served[Lane.BACKGROUND]
            order = sorted(self.interims, key=lambda e: (e.job.rev > 0, served[e.job.session], e.entry_order))
            chosen, self.interims = order[: self.batch], order[self.batch :]
            served.mark(chosen)
            plan.run = Run(Lane.BACKGROUND, chosen)
        return plan

    def _live_interims(self, plan: Plan, now_ms: int) -> list[Entry]:
        """The interims worth decoding: past their deadline dropped, all but a session's newest
        superseded."""
        newest: dict[str, Entry] = {}
        for e in self.interims:
            if e.job.deadline and e.job.deadline < now_ms:
                plan.drop("stale_dropped", [e])
                continue
            held = newest.get(e.job.session)
            if held is None:
                newest[e.job.session] = e
            elif (e.job.utt, e.job.rev) > (held.job.utt, held.job.rev):
                plan.drop("superseded", [held])
                newest[e.job.session] = e
            else:
                plan.drop("superseded", [e])
        return list(newest.values())

    def _files_turn(self, now_ms: int) -> bool:
        """While interims wait too: whether file parts have had less than their share of time."""
        return self.background.share(JobKind.BATCH, now_ms) < self.file_share

    def ran(self, run: Run, seconds: float, now_ms: int) -> None:
        """A background run took `seconds` (the time share of file parts and interims)."""
        if run.lane is Lane.BACKGROUND:
            self.background.add(run.kind, seconds, now_ms)
