"""The decoder loop: reads jobs, asks the scheduler (decoder/scheduler.py) what each lane runs
next, decodes, delivers, recovers.

Two lanes decode at once, each one run (a list of jobs) at a time: the final lane (finals, then
speculative finals) and the background lane (interims and file parts). The loop reads a
stream only for a lane that is free, so a decoder holds no more than it is about to decode and
the others take the rest. A final-lane run passes the gate first (decoder/gate.py: a job id is
decoded once, whichever decoders read it). A Redis outage never ends the loop: it backs off and resumes,
re-reading its own pending entries first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from redis.exceptions import RedisError, ResponseError

from common import keys
from common.audio import pcm16_to_float32
from common.backoff import Backoff
from common.clock import now_ms
from common.errors import AudioError, AudioMissing
from common.lifecycle import REDIS_TRANSIENT, StopFlag, Watchdog, heartbeat
from common.messages import JobKind, Result
from common.redisconn import aclose, async_client
from common.settings import DecoderSettings
from decoder.breaker import DeviceBreaker
from decoder.delivery import Delivery
from decoder.engine import Engine
from decoder.gate import FinalGate
from decoder.metrics import DecoderMetrics
from decoder.scheduler import Lane, Run, Scheduler
from decoder.streams import BadEntry, Entry, JobStreams, Read
from decoder.turnmodel import TurnModel
from decoder.turns import TurnAnswers

logger = logging.getLogger(__name__)

BLOCK_MS = 500
POLL_MS = 50  # how often the loop looks again while a lane is busy or a job is decoded elsewhere
PRUNE_EVERY_S = 30.0
DEAD_CONSUMER_IDLE_MS = 60_000  # a live decoder reads far more often than this


class DecoderWorker(Delivery):
    def __init__(
        self,
        settings: DecoderSettings,
        engine: Engine,
        metrics: DecoderMetrics | None = None,
        turn_model: TurnModel | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.turn_model = turn_model  # answers end-of-turn questions when loaded (decoder/turns.py)
        self.metrics = metrics or DecoderMetrics()
        self.id = settings.decoder_id
        self.redis = async_client(settings.redis_url, socket_connect_timeout=2.0, socket_timeout=BLOCK_MS / 1000 + 5.0)
        self.streams = JobStreams(self.redis, self.id)
        self.scheduler = Scheduler(settings.DECODE_BATCH, settings.BATCH_SHARE, cpu=engine.device == "cpu")
        self.stop = StopFlag()
        self._last_beat: float | None = None
        # A thread per lane (the engine's lanes have their own too): a decode in the background
        # lane never delays a final.
        self._executors = {lane: ThreadPoolExecutor(max_workers=1, thread_name_prefix=lane) for lane in Lane}
        self._runs: dict[Lane, tuple[asyncio.Task[None], Run]] = {}  # each busy lane's run, and its task
        self.gate = FinalGate(self.streams, self._count, settings.RESULT_TTL_S)
        self._ready = False
        self._next_claim = 0.0
        self._next_keep = 0.0
        self._next_prune = 0.0
        self._jobs_done = 0
        # A helper that dies stops the decoder (it exits non-zero: its supervisor restarts it).
        self.watchdog = Watchdog(self.stop, lambda reason: self.stop.request())
        self.breaker = DeviceBreaker(on_device=engine.device == "cuda")

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until `stop` is requested (a signal handler calls `stop.request()`)."""
        logger.info("decoder %s consuming %s (batch %d)", self.id, ", ".join(keys.STREAMS), self.settings.DECODE_BATCH)
        self.watchdog.start(self._heartbeat(), "heartbeat")
        self.watchdog.start(self._announce_stop(), "announce-stop")
        if self.turn_model is not None:
            nice = self.settings.BACKGROUND_NICE if self.engine.device == "cpu" else 0
            answers = TurnAnswers(self.redis, self.turn_model, self.id, self.metrics, self.stop, nice)
            self.watchdog.start(answers.run(), "turns")
        try:
            await self._loop()
        finally:
            # Finish the runs in hand, and the finals read and not yet run.
            await asyncio.gather(*(t for t, _ in self._runs.values()), return_exceptions=True)
            await self._finish_finals()
            await self.watchdog.finish(timeout=self.settings.HEARTBEAT_S + 5)
            await self._shutdown()

    @property
    def failed(self) -> str | None:
        """Why the decoder stopped on its own, if it did."""
        return self.watchdog.failed or self.breaker.tripped

    async def _announce_stop(self) -> None:
        """Say when a stop was asked for (the signal handler itself only sets the flag)."""
        await self.stop.wait()
        logger.info("decoder %s stopping: taking no more jobs, finishing the ones in hand", self.id)

    async def _loop(self) -> None:
        backoff = Backoff()
        while not self.stop.requested:
            try:
                if not self._ready:
                    await self.streams.ensure_groups()
                    own = await self.streams.claim_own_pending(self.settings.DECODE_BATCH * 4)
                    self._ready = True
                    if own:
                        logger.info("resuming %d entries of my own pending list", len(own))
                        await self._admit(own)
                await self._turn()
                if backoff.failing:
                    logger.info("Redis is back; decoder %s resumes", self.id)
                backoff.reset()
            except REDIS_TRANSIENT as exc:
                self._ready = False
                delay = backoff.next()
                logger.warning("Redis unavailable (%s); retrying in %.1fs", exc, delay)
                await self.stop.sleep(delay)
            except ResponseError as exc:
                # NOGROUP after Redis lost its data, or a refused command: set up again.
                self._ready = False
                delay = backoff.next()
                logger.error("Redis refused a command (%s); retrying in %.1fs", exc, delay)
                await self.stop.sleep(delay)

    async def _finish_finals(self) -> None:
        """At a stop: decode the finals already read (bounded: a run or two), so none waits for
        another decoder to claim it; unless the device is what failed (they are left to others)."""
        if self.breaker.tripped:
            return
        try:
            while self.scheduler.finals:
                plan = self.scheduler.next_run(Lane.FINAL, now_ms())
                if plan.run is None:
                    break
                await self._run(plan.run)
        except RedisError as exc:
            logger.warning("could not finish the finals in hand at shutdown: %s", exc)

    async def _shutdown(self) -> None:
        # What is left is speculation, interims (their gateways stop waiting at the deadline
        # anyway) and file parts (another decoder claims them).
        held = [e for e in self.scheduler.drain() if e.kind in (JobKind.INTERIM, JobKind.SPECULATIVE)]
        try:
            if held:
                await self.streams.ack(held)
                self._count(held, "stale_dropped")
        except RedisError as exc:
            logger.warning("could not acknowledge held interims at shutdown: %s", exc)
        await aclose(self.redis)
        for executor in self._executors.values():
            executor.shutdown(wait=True)
        logger.info("decoder %s stopped after %d jobs", self.id, self._jobs_done)

    async def _heartbeat(self) -> None:
        await heartbeat(
            self.redis,
            "decoder",
            self.id,
            lambda: {
                "model": self.engine.model_name,
                "device": "%s:%d" % (self.engine.device, self.engine.device_index),
                "compute_type": self.engine.compute_type,
                "jobs_done": self._jobs_done,
                "batch": self.settings.DECODE_BATCH,
                "multilingual": int(self.engine.multilingual),
                "turn": int(self.turn_model is not None),
                "speakers": int(self.engine.voice is not None),
            },
            self.settings.HEARTBEAT_S,
            self.settings.NODE_TTL_S,
            self.stop,
            on_beat=self._beat,
        )

    def _audio_may_come(self, e: Entry) -> bool:
        """A final-lane job whose audio is missing was queued recently enough that its gateway
        may still write it (a failover lost the newest appends): AUDIO_WAIT_S."""
        return e.kind.decodes_as_final and now_ms() - e.job.enqueued < self.settings.AUDIO_WAIT_S * 1000

    def _beat(self) -> None:
        self._last_beat = time.monotonic()

    def not_ready(self) -> str | None:
        """Why this decoder should get no work now (its readiness probe), or None."""
        if self.failed:
            return self.failed
        if self.stop.requested:
            return "stopping"
        if self._last_beat is None or time.monotonic() - self._last_beat > self.settings.NODE_TTL_S:
            return "Redis does not answer"
        return None

    # --- one turn of the loop --------------------------------------------------------------

    async def _turn(self) -> None:
        batch = self.settings.DECODE_BATCH
        if time.monotonic() >= self._next_claim and await self._claim():
            return
        self._reap()
        if self.gate.parked:
            self.scheduler.put_back(await self.gate.recheck())
        if time.monotonic() >= self._next_keep:
            await self._keep_waiting()
        free = [lane for lane in Lane if lane not in self._runs]
        kinds = tuple(kind for lane in free for kind in self.scheduler.wants(lane))
        if kinds:
            runnable = any(self.scheduler.held(k) for lane in free for k in self._lane_kinds(lane))
            busy = len(free) < len(Lane) or bool(self.gate.parked)
            block = None if runnable else POLL_MS if busy else BLOCK_MS
            count = self.scheduler.read_count(free)
            read = await self.streams.read(kinds, count, block)
            await self._admit(read)
            if count < batch and Lane.BACKGROUND in free and any(not e.kind.decodes_as_final for e in read.jobs):
                # Fewer read for the final lane's sake (a CPU): the background lane's run filled.
                await self._admit(await self.streams.read(self.scheduler.wants(Lane.BACKGROUND), batch - count, None))
        started = False
        for lane in free:
            started = await self._start(lane) or started
        if not started and len(free) < len(Lane) and not kinds:
            running = [t for t, _ in self._runs.values()]
            await asyncio.wait(running, timeout=POLL_MS / 1000, return_when=asyncio.FIRST_COMPLETED)

    @staticmethod
    def _lane_kinds(lane: Lane) -> tuple[JobKind, ...]:
        return tuple(k for k in JobKind if k is not JobKind.TURN and (lane is Lane.FINAL) == k.decodes_as_final)

    async def _claim(self) -> bool:
        """Entries left idle by a dead decoder (every so often); whether there were any."""
        batch = self.settings.DECODE_BATCH
        self._next_claim = time.monotonic() + max(0.2, self.settings.CLAIM_IDLE_MS / 4000)
        claimed = Read()
        for stream in keys.STREAMS:
            got = await self.streams.claim_idle(stream, self.settings.CLAIM_IDLE_MS, batch)
            claimed.jobs += got.jobs
            claimed.bad += got.bad
        if claimed:
            labels = [e.label for e in claimed.jobs] + [e.label for e in claimed.bad]
            logger.info("claimed %d idle entries: %s", len(claimed), ", ".join(labels))
            self._count(claimed.jobs, "reclaimed")
            await self._admit(claimed)
            return True
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            gone = await self.streams.prune_consumers(max(DEAD_CONSUMER_IDLE_MS, 4 * self.settings.CLAIM_IDLE_MS))
            if gone:
                logger.info("removed the consumers of dead decoders: %s", ", ".join(gone))
        return False

    def _waiting(self) -> list[Entry]:
        """The entries held and not being decoded: parked in the gate, queued in the scheduler."""
        return self.gate.parked + self.scheduler.waiting()

    async def _keep_waiting(self) -> None:
        """Keep the waiting entries this decoder's, as a run keeps its own: one that waits longer
        than CLAIM_IDLE_MS (a long decode elsewhere holds its lease) must not look abandoned, to
        be claimed, delivered again and at last dead-lettered."""
        self._next_keep = time.monotonic() + self.settings.CLAIM_IDLE_MS / 3000
        waiting = self._waiting()
        if waiting:
            await self.streams.keep_claimed(waiting)

    def _in_hand(self) -> set[tuple[str, str]]:
        held = self._waiting() + [e for _, run in self._runs.values() for e in run.entries]
        return {(e.stream, e.entry_id) for e in held}

    async def _admit(self, read: Read) -> None:
        """Entries read or claimed: the unreadable and the too often delivered are dead-lettered,
        the rest go to the scheduler, but for those already in hand (claimed back after a stall
        or a Redis outage): each entry is held once."""
        for bad in read.bad:
            logger.error("unreadable entry %s: %s (dead-lettered)", bad.label, bad.problem)
            await self.streams.dead_letter(bad, bad.problem, self.id)
            self._count([bad], "dead", kind=keys.kind_of(bad.stream))
        good = []
        limit = self.settings.MAX_DELIVERIES
        held = self._in_hand()
        for e in read.jobs:
            if (e.stream, e.entry_id) in held:
                logger.info("job %s is already in hand; not taken twice", e.label)
                continue
            if e.deliveries > limit:
                logger.error("job %s delivered %d times (limit %d): dead-lettered", e.label, e.deliveries, limit)
                await self.streams.dead_letter(e, "delivered %d times" % e.deliveries, self.id)
                self._count([e], "dead")
            else:
                good.append(e)
        self.scheduler.add(good, now_ms())

    async def _start(self, lane: Lane) -> bool:
        """Start the lane's next run, if there is one."""
        if (
            lane is Lane.BACKGROUND
            and self.settings.BATCH_WAIT_MS
            and 0 < len(self.scheduler.interims) < (self.settings.DECODE_BATCH)
        ):
            more = self.settings.DECODE_BATCH - len(self.scheduler.interims)
            await self._admit(await self.streams.read((JobKind.INTERIM,), more, self.settings.BATCH_WAIT_MS))
        plan = self.scheduler.next_run(lane, now_ms())
        for reason, entries in plan.dropped.items():
            await self.streams.ack(entries)
            self._count(entries, reason)
        if plan.run is None:
            return False
        self._runs[lane] = (asyncio.create_task(self._run(plan.run), name="%s-lane" % lane), plan.run)
        return True

    def _reap(self) -> None:
        """The lanes' runs that have ended: an error of theirs (a Redis outage) is the loop's."""
        for lane, (task, _) in list(self._runs.items()):
            if task.done():
                del self._runs[lane]
                task.result()

    async def _run(self, run: Run) -> None:
        started = time.monotonic()
        entries, twins = run.entries, list[Entry]()
        if run.lane is Lane.FINAL:
            entries, twins = await self.gate.admit(entries)
        await self._process(entries, run.kind)
        if twins:
            await self.streams.ack(twins)
            self._count(twins, "cached")
        self.scheduler.ran(run, time.monotonic() - started, now_ms())

    # --- decoding --------------------------------------------------------------------------

    async def _process(self, entries: list[Entry], kind: JobKind) -> None:
        """Decode a list of jobs of one lane and deliver every result. Each job fails alone."""
        if not entries:
            return
        done: list[tuple[Entry, Result | bytes]] = []
        todo: list[Entry] = []
        # File parts are looked up here; final-lane jobs were, in their preflight.
        cached: list[bytes | None] = [None] * len(entries)
        if kind == JobKind.BATCH:
            cached = await self.streams.cached_results([e.job for e in entries])
        for e, hit in zip(entries, cached):
            if hit is not None:
                done.append((e, hit))
                self._count([e], "cached")
            elif e.kind == JobKind.INTERIM and e.job.deadline and e.job.deadline < now_ms():
                await self.streams.ack([e])
                self._count([e], "stale_dropped")
            else:
                todo.append(e)
        audio = await self.streams.fetch_audio([e.job for e in todo])
        ready: list[tuple[Entry, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        for e, (data, context, after) in zip(todo, audio):
            if isinstance(data, AudioMissing) and self._audio_may_come(e):
                # Not yet: its gateway writes the audio again when it re-queues the final.
                logger.warning(
                    "job %s (session %s utt %d): %s; left to its gateway", e.job.id, e.job.session, e.job.utt, data
                )
                await self.streams.ack([e])
                self._count([e], "audio_missing")
            elif isinstance(data, AudioError):
                logger.error("job %s (session %s utt %d): %s", e.job.id, e.job.session, e.job.utt, data)
                done.append((e, Result.failure(e.job, "audio: %s" % data, self.id)))
                self._count([e], "failed")
            else:
                if e.job.context_key and context is None:
                    logger.info("job %s: context %s is gone; decoding without it", e.job.id, e.job.context_key)
                ready.append(
                    (
                        e,
                        pcm16_to_float32(data),
                        pcm16_to_float32(context) if context else None,
                        pcm16_to_float32(after) if after else None,
                    )
                )
        if done:
            await self.streams.deliver(done, self.settings.RESULT_TTL_S)
        if ready:
            await self._decode(ready, kind)

    def _count(self, entries: Sequence[Entry | BadEntry], outcome: str, kind: JobKind | None = None) -> None:
        for e in entries:
            label = kind or (e.kind if isinstance(e, Entry) else keys.kind_of(e.stream))
            self.metrics.jobs.labels(label, outcome).inc()
            if outcome in ("done", "cached", "failed"):
                self._jobs_done += 1
