"""What the session core asks its driver to do, in order (gateway/transport/driver.py carries
them out): the core decides, the driver does the I/O.

Order matters and is kept: audio is appended before a job that names it is queued; a pending
final is recorded for a resume before its job is queued (a gateway taking over queues it
again); a record is written after every message emitted before it (so the state recorded never
says more was delivered than the log of sent messages holds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from common.messages import Job
from gateway.core.events import Event


@dataclass(frozen=True)
class AppendAudio:
    """Write `pcm` at `offset` of utterance `utt`'s audio key (offset 0: a new key)."""

    utt: int
    offset: int
    pcm: bytes


@dataclass(frozen=True)
class RestoreAudio:
    """Write an utterance's whole audio again (a failover may have lost its newest appends)."""

    utt: int
    pcm: bytes


@dataclass(frozen=True)
class Enqueue:
    job: Job


@dataclass(frozen=True)
class Cancel:
    """A speculative job is no longer wanted."""

    job_id: str


@dataclass(frozen=True)
class DropAudio:
    utts: tuple[int, ...]


@dataclass(frozen=True)
class Record:
    """Write these fields of the session's resumable state ("" deletes one)."""

    fields: dict[str, str]


@dataclass(frozen=True)
class Emit:
    """Tell the connection's protocol adapter."""

    event: Event


Effect = AppendAudio | RestoreAudio | Enqueue | Cancel | DropAudio | Record | Emit


class Step:
    """The effects of one call, put in the order they must be carried out: audio first (a job
    names it), then what the client is told, then the record for a resume (after the messages,
    so it never says more was delivered than the log holds; after the audio, so its position is
    held), then the jobs (a final only once recorded)."""

    def __init__(self) -> None:
        self.audio: list[Effect] = []
        self.emits: list[Effect] = []
        self.jobs: list[Effect] = []
        self.record = False

    def add(self, effects: Iterable[Effect]) -> None:
        for e in effects:
            if isinstance(e, AppendAudio):
                self.audio.append(e)
            elif isinstance(e, Emit):
                self.emits.append(e)
            elif isinstance(e, Record):
                self.record = True
            else:
                self.jobs.append(e)
