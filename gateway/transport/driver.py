"""One session's driver: it calls the session core (gateway/core/session.py) and carries out the
effects it returns, in order, against the job streams, the connection and its journal; and it
is where a failure of the session is handled, whatever part of the gateway met it.

One step at a time: audio, `finalize`, a discard and the periodic tick are serialized (the
tick is skipped while a step is under way, and comes again), so the state a record writes is
the one its effects before it left. Results come in between, without waiting: their effects
are only messages to the client. They go to the connection at once, or, while a step is
under way, right after that step's own: a step that ends an utterance says so (speech
stopped, committed) while its Redis writes are still being awaited, and the final a result
brings in that time must not reach the client first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from redis.exceptions import RedisError

from common.clock import now_ms
from common.messages import Result
from gateway.core.effects import AppendAudio, Cancel, DropAudio, Effect, Emit, Enqueue, Record, RestoreAudio
from gateway.core.events import Event, SpeechStopped
from gateway.core.options import EotRule, SessionOptions, Turn
from gateway.core.session import Session
from gateway.store.jobqueue import Queue
from gateway.store.journal import LEASE_MS, Fenced

logger = logging.getLogger(__name__)
RENEW_S = 1.0  # how often a connected resumable session renews its lease (and records its position)
FENCED = "taken over by another gateway"  # what `broken` says of a session resumed elsewhere


class Outlet(Protocol):
    """Where a session's records go (the connection: after the messages queued before them)."""

    async def record(self, fields: dict[str, str]) -> None: ...


class NoRecords:
    """An outlet for a session nothing records (benchmarks, the accuracy simulation)."""

    async def record(self, fields: dict[str, str]) -> None:
        return None


class SessionDriver:
    def __init__(
        self, core: Session, queue: Queue, outlet: Outlet, emit: Callable[[Event], None], resume_token: str = ""
    ) -> None:
        self.core = core
        self.queue = queue
        self.outlet = outlet
        self.emit = emit
        self.resume_token = resume_token  # a resumable session's (sent once, in `started`)
        self.lock = asyncio.Lock()
        self.finals_done = asyncio.Event()  # set while no final is outstanding nor held
        self.room = asyncio.Event()  # set while fewer than MAX_PENDING_FINALS finals are outstanding
        self.renewed_at = 0.0
        self.left = False  # its connection ended: nothing more is done for it here
        self.deferred: list[Effect] = []  # effects of a result, carried out at the next step
        self.held: list[Event] = []  # messages of results that came while a step was under way
        self._sync()

    # --- what a protocol adapter sees of its session --------------------------------------

    @property
    def id(self) -> str:
        return self.core.id

    @property
    def options(self) -> SessionOptions:
        return self.core.options

    @property
    def broken(self) -> str | None:
        return self.core.broken

    @property
    def audio_s(self) -> float:
        return self.core.audio_s

    @property
    def next_utt(self) -> int:
        return self.core.next_utt

    @property
    def speaking(self) -> bool:
        """Whether an utterance is open."""
        return self.core.current is not None

    @property
    def finals_outstanding(self) -> int:
        return self.core.finals_outstanding

    def set_rate(self, rate: int) -> None:
        self.core.set_rate(rate)

    def set_turn(self, turn: Turn | None, eot: EotRule | None = None) -> None:
        self.core.set_turn(turn, eot)

    def set_language(self, lang: str | None) -> None:
        self.core.set_language(lang)

    # --- steps ---------------------------------------------------------------------------

    async def run(self, effects: list[Effect]) -> None:
        """Carry out `effects` in order (after those a result left for this step), under the lock."""
        sid = self.core.id
        if self.deferred:
            effects, self.deferred = [*self.deferred, *effects], []
        try:
            for e in effects:
                if isinstance(e, AppendAudio):
                    await self.queue.append_audio(sid, e.utt, e.pcm, e.offset)
                elif isinstance(e, Emit):
                    self.emit(e.event)
                elif isinstance(e, Enqueue):
                    await self.queue.enqueue(e.job)
                elif isinstance(e, Record):
                    await self.outlet.record(e.fields)
                elif isinstance(e, Cancel):
                    await self.queue.cancel(e.job_id)
                elif isinstance(e, DropAudio):
                    await self.queue.drop_audio(sid, *e.utts)
                elif isinstance(e, RestoreAudio):
                    await self.queue.restore_audio(sid, e.utt, e.pcm)
        finally:
            held, self.held = self.held, []
            for event in held:
                self.emit(event)
        self._sync()

    async def feed(self, pcm: bytes) -> None:
        async with self.lock:
            await self.run(self.core.feed(pcm))

    async def finalize(self) -> bool:
        """End the utterance being spoken; whether a final was queued for it."""
        async with self.lock:
            effects = self.core.finalize()
            await self.run(effects)
        return any(isinstance(e, Emit) and isinstance(e.event, SpeechStopped) for e in effects)

    async def discard(self) -> None:
        async with self.lock:
            await self.run(self.core.discard())

    async def requeue_pending(self) -> None:
        async with self.lock:
            await self.run(self.core.requeue_pending())

    async def tick(self) -> bool:
        """The periodic work (deadlines, re-queues, audio clean-up, the lease); False when the
        session can go no further here (taken over, or failed)."""
        if self.lock.locked():
            return self.core.broken is None  # a step is under way; the next tick comes soon
        try:
            async with self.lock:
                if self.left:
                    return False  # a tick taken up before its connection ended renews nothing
                effects = self.core.tick()
                now = time.monotonic()
                if self.core.resumable and now - self.renewed_at > RENEW_S:
                    # The lease says its client is still connected here, and the position moves on.
                    self.renewed_at = now
                    effects.append(
                        Record({**self.core.snapshot(), "connected": "1", "lease": str(now_ms() + LEASE_MS)})
                    )
                await self.run(effects)
        except (RedisError, OSError) as exc:
            logger.warning("session %s: tick failed: %s", self.id, exc)
        except Exception as exc:
            self.fail(exc)
        return self.core.broken is None

    def on_result(self, result: Result) -> None:
        """A decoder's result: its messages go to the client now; what else it calls for (the
        record and jobs of a turn its answer ended) is done at the session's next step."""
        try:
            for e in self.core.on_result(result):
                if isinstance(e, Emit):
                    self._deliver(e.event)
                else:
                    self.deferred.append(e)
        except Exception as exc:
            logger.error("session %s: result %s could not be handled", self.id, result.id)
            self.fail(exc)
        self._sync()

    def fail(self, exc: BaseException) -> None:
        """Handling the session failed: taken over elsewhere (it says nothing more), or what it
        owes becomes errors and it ends. Other sessions are not touched."""
        if isinstance(exc, Fenced):
            logger.info("session %s was resumed by another gateway; this one lets it go", self.id)
            self.core.broken = FENCED
            return
        if isinstance(exc, (RedisError, OSError)):
            logger.error("session %s: Redis failed: %s", self.id, exc)
            self.abandon("the service lost its queue")
            return
        logger.error("session %s failed", self.id, exc_info=exc)
        self.abandon("internal error: %s" % type(exc).__name__)

    def abandon(self, why: str) -> None:
        for e in self.core.abandon(why):
            self.emit(e.event)
        self._sync()

    def fail_outstanding(self, why: str) -> int:
        """Every utterance still owed a final gets an error naming it instead; how many."""
        emits = self.core.fail_outstanding(why)
        for e in emits:
            self.emit(e.event)
        self._sync()
        return len(emits)

    async def wait_for_room(self) -> None:
        """Until fewer than MAX_PENDING_FINALS finals are outstanding (each resolves by itself:
        a result, or an error after MAX_DELIVERIES tries)."""
        await self.room.wait()

    async def leave(self, keep: bool, finished: bool) -> None:
        """The connection ended: a resumable session that did not end keeps everything for a
        resume (`keep`); otherwise its audio no longer needed is deleted."""
        async with self.lock:
            self.left = True
            if self.core.resumable:
                gone = {"connected": "0", "lease": "0", **({"finished": "1"} if finished else {})}
                await self.run([Record({**self.core.snapshot(), **gone})])
            if not keep:
                await self.run(self.core.cleanup())

    def _deliver(self, event: Event) -> None:
        """A result's message: to the connection now, or after the messages of the step under way
        (every step runs under the lock, which is held only while one does)."""
        if self.lock.locked():
            self.held.append(event)
        else:
            self.emit(event)

    def _sync(self) -> None:
        # A final held for the step under way is still owed: whoever waits on `finals_done`
        # (the drain before `done`) would otherwise end the session before it is sent.
        if self.core.finals_outstanding or self.held:
            self.finals_done.clear()
        else:
            self.finals_done.set()
        if self.core.has_room:
            self.room.set()
        else:
            self.room.clear()
