"""The decoder loop: finals before interims, then file jobs, a list of jobs as the unit of work,
recovery.

Each turn: claim entries left idle by a dead decoder (every so often), then take waiting finals
without blocking. Interims and file jobs share a background lane, one run at a time, while the
loop goes on taking finals; when both wait, file jobs get every n-th run (BATCH_SHARE), so a file
never starves and live interims stay live. Only when nothing waits does it block on every
stream. A Redis outage never ends the loop: it backs off and resumes, re-reading its own
pending entries first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from common import keys
from common.audio import pcm16_to_float32
from common.backoff import Backoff
from common.clock import now_ms
from common.errors import AudioError, DecodeError
from common.lifecycle import REDIS_TRANSIENT, StopFlag, Watchdog, heartbeat
from common.messages import BATCH, KINDS, Job, Result
from common.settings import Settings
from decoder.engine import DecodeOutput, Engine
from decoder.fairness import InterimQueue
from decoder.metrics import DecoderMetrics
from decoder.streams import Entry, JobStreams

logger = logging.getLogger(__name__)

BLOCK_MS = 500
INTERIM_POLL_MS = 50  # how often the loop looks whether the interim lane is free again
LIVE_QUIET_S = 5.0  # live jobs this recent mean live sessions: file runs are one part at a time
PRUNE_EVERY_S = 30.0
DEAD_CONSUMER_IDLE_MS = 60_000  # a live decoder reads far more often than this


class DecoderWorker:
    def __init__(self, settings: Settings, engine: Engine, metrics: DecoderMetrics | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics or DecoderMetrics()
        self.id = settings.decoder_id
        self.redis = aioredis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2.0, socket_timeout=BLOCK_MS / 1000 + 5.0
        )
        self.streams = JobStreams(self.redis, self.id)
        self.interims = InterimQueue()
        self.stop = StopFlag()
        # One lane per live kind (the engine's too): an interim decode in progress never delays a
        # final. File jobs take turns with interims in the background lane.
        self._executors = {kind: ThreadPoolExecutor(max_workers=1, thread_name_prefix=kind) for kind in KINDS}
        self._executors[BATCH] = self._executors["interim"]
        self._background: asyncio.Task[None] | None = None
        self.files: list[Entry] = []  # file jobs read (or reclaimed) and not yet started
        self._runs_since_files = 0
        self._last_live = 0.0  # monotonic time the loop last took live (final or interim) jobs
        self._ready = False
        self._next_claim = 0.0
        self._next_prune = 0.0
        self._jobs_done = 0
        # A helper that dies stops the decoder (it exits non-zero: its supervisor restarts it).
        self.watchdog = Watchdog(self.stop, lambda reason: self.stop.request())

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until `stop` is requested (a signal handler calls `stop.request()`)."""
        logger.info(
            "decoder %s consuming %s (batch %d)",
            self.id,
            ", ".join(keys.STREAMS),
            self.settings.DECODE_BATCH,
        )
        self.watchdog.start(self._heartbeat(), "heartbeat")
        self.watchdog.start(self._announce_stop(), "announce-stop")
        try:
            await self._loop()
        finally:
            if self._background is not None:
                # Finish the background run in hand (interims or file jobs), like a final batch.
                await asyncio.gather(self._background, return_exceptions=True)
            await self.watchdog.finish(timeout=self.settings.HEARTBEAT_S + 5)
            await self._shutdown()

    @property
    def failed(self) -> str | None:
        """Why the decoder stopped on its own, if it did."""
        return self.watchdog.failed

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
                        await self._process_mixed(own)
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

    async def _shutdown(self) -> None:
        held = self.interims.drain()
        try:
            if held:
                # Only interims: their gateways stop waiting at the deadline anyway.
                await self.streams.ack(held)
                self._count(held, "stale_dropped")
        except RedisError as exc:
            logger.warning("could not acknowledge held interims at shutdown: %s", exc)
        await self.redis.aclose()
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
            },
            self.settings.HEARTBEAT_S,
            self.settings.NODE_TTL_S,
            self.stop,
        )

    # --- one turn of the loop --------------------------------------------------------------

    async def _turn(self) -> None:
        batch = self.settings.DECODE_BATCH
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + max(0.2, self.settings.CLAIM_IDLE_MS / 4000)
            claimed = []
            for stream in keys.STREAMS:
                claimed += await self.streams.claim_idle(stream, self.settings.CLAIM_IDLE_MS, batch)
            if claimed:
                logger.info("claimed %d idle entries: %s", len(claimed), ", ".join(e.label for e in claimed))
                await self._process_mixed(claimed, reclaimed=True)
                return
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + PRUNE_EVERY_S
                gone = await self.streams.prune_consumers(max(DEAD_CONSUMER_IDLE_MS, 4 * self.settings.CLAIM_IDLE_MS))
                if gone:
                    logger.info("removed the consumers of dead decoders: %s", ", ".join(gone))
        self._reap_background()
        if self._background is not None:
            # The background lane is busy: only finals are taken meanwhile, at once.
            finals = await self.streams.read({keys.STREAM_FINAL: ">"}, batch, INTERIM_POLL_MS)
            if finals:
                await self._process(finals, "final")
            return
        finals = await self.streams.read({keys.STREAM_FINAL: ">"}, batch, None)
        if finals:
            await self._process(finals, "final")
            return
        if not self.interims:
            entries = await self.streams.read({keys.STREAM_FINAL: ">", keys.STREAM_INTERIM: ">"}, batch, None)
            if await self._sort(entries):
                return
            if self.interims and self.settings.BATCH_WAIT_MS and len(self.interims) < batch:
                more = await self.streams.read(
                    {keys.STREAM_INTERIM: ">"}, batch - len(self.interims), self.settings.BATCH_WAIT_MS
                )
                await self._admit_interims(more)
        if self._files_turn():
            if len(self.files) < batch:
                self.files += await self._reject_unreadable(
                    await self.streams.read({keys.STREAM_BATCH: ">"}, batch - len(self.files), None)
                )
            if self.files:
                # While live sessions run on a CPU, a file run is one part: the interims behind
                # it wait for one part's decode, not for a whole batch of them. A GPU decodes a
                # batch about as fast as one part, and its final lane is a model of its own.
                live = time.monotonic() - self._last_live < LIVE_QUIET_S
                size = 1 if live and self.engine.device == "cpu" else batch
                chosen, self.files = self.files[:size], self.files[size:]
                self._runs_since_files = 0
                self._background = asyncio.create_task(self._process(chosen, BATCH), name="files")
                return
        if self.interims:
            sel = self.interims.take(batch, now_ms())
            if sel.stale or sel.superseded:
                await self.streams.ack(sel.stale + sel.superseded)
                self._count(sel.stale, "stale_dropped")
                self._count(sel.superseded, "superseded")
            if sel.chosen:
                self._runs_since_files += 1
                self._background = asyncio.create_task(self._process(sel.chosen, "interim"), name="interims")
            return
        # Nothing waits anywhere: block on every stream.
        streams = {stream: ">" for stream in keys.STREAMS}
        await self._sort(await self.streams.read(streams, batch, BLOCK_MS))

    async def _sort(self, entries: list[Entry]) -> bool:
        """Finals decoded now (True: some were), interims and file jobs held for the background lane."""
        await self._admit_interims([e for e in entries if e.kind == "interim"])
        self.files += await self._reject_unreadable([e for e in entries if e.kind == BATCH])
        finals = [e for e in entries if e.kind == "final"]
        if finals:
            await self._process(finals, "final")
        return bool(finals)

    def _files_turn(self) -> bool:
        """Whether the background lane's next run is file jobs': always when no interim waits;
        else every n-th run, n = 1 / BATCH_SHARE."""
        if not self.interims:
            return True
        return self._runs_since_files + 1 >= round(1 / self.settings.BATCH_SHARE)

    def _reap_background(self) -> None:
        """The background lane's last run, if it has ended: its error (a Redis outage) is the loop's."""
        run = self._background
        if run is not None and run.done():
            self._background = None
            run.result()

    async def _admit_interims(self, entries: list[Entry]) -> None:
        good = await self._reject_unreadable(entries)
        self.interims.add(good)

    async def _process_mixed(self, entries: list[Entry], reclaimed: bool = False) -> None:
        if reclaimed:
            self._count([e for e in entries if e.job], "reclaimed")
        limit = self.settings.MAX_DELIVERIES
        over = [e for e in entries if e.deliveries > limit]
        for e in over:
            logger.error("job %s delivered %d times (limit %d): dead-lettered", e.label, e.deliveries, limit)
            await self.streams.dead_letter(e, "delivered %d times" % e.deliveries, self.id)
            self._count([e], "dead")
        await self._sort([e for e in entries if e.deliveries <= limit])

    async def _reject_unreadable(self, entries: list[Entry]) -> list[Entry]:
        good = []
        for e in entries:
            if e.job is None:
                logger.error("unreadable entry %s: %s (dead-lettered)", e.label, e.problem)
                await self.streams.dead_letter(e, e.problem or "unreadable", self.id)
                self._count([e], "dead", kind=e.kind)
            else:
                good.append(e)
        return good

    async def _process(self, entries: list[Entry], kind: str) -> None:
        """Decode a list of jobs of one kind and deliver every result. Each job fails alone."""
        if kind != BATCH:
            self._last_live = time.monotonic()
        entries = await self._reject_unreadable(entries)
        if not entries:
            return
        jobs = [e.job for e in entries if e.job is not None]
        done: list[tuple[Entry, Result | bytes]] = []
        todo: list[Entry] = []
        cached = await self.streams.cached_results(jobs) if kind != "interim" else [None] * len(jobs)
        for e, hit in zip(entries, cached):
            if hit is not None:
                logger.info("job %s answered from the result cache", e.label)
                done.append((e, hit))
                self._count([e], "cached")
            elif kind == "interim" and e.job and e.job.deadline and e.job.deadline < now_ms():
                await self.streams.ack([e])
                self._count([e], "stale_dropped")
            else:
                todo.append(e)
        audio = await self.streams.fetch_audio([e.job for e in todo if e.job])
        ready: list[tuple[Entry, np.ndarray, np.ndarray | None]] = []
        for e, (data, context) in zip(todo, audio):
            assert e.job is not None
            if isinstance(data, AudioError):
                logger.error("job %s (session %s utt %d): %s", e.job.id, e.job.session, e.job.utt, data)
                done.append((e, Result.failure(e.job, "audio: %s" % data, self.id)))
                self._count([e], "failed")
            else:
                if e.job.context_key and context is None:
                    logger.info("job %s: context %s is gone; decoding without it", e.job.id, e.job.context_key)
                ready.append((e, pcm16_to_float32(data), pcm16_to_float32(context) if context else None))
        if ready:
            done.extend(await self._decode(ready, kind))
        if done:
            await self.streams.deliver(done, self.settings.RESULT_TTL_S)

    async def _decode(
        self, ready: list[tuple[Entry, np.ndarray, np.ndarray | None]], kind: str
    ) -> list[tuple[Entry, Result | bytes]]:
        started_ms = now_ms()
        items: list[tuple[Job, np.ndarray]] = [(e.job, a) for e, a, _ in ready if e.job is not None]
        contexts = [c for e, _, c in ready if e.job is not None]
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        decoding = loop.run_in_executor(self._executors[kind], self.engine.decode_many, items, contexts)
        outputs, _ = await asyncio.gather(decoding, self._keep_claimed([e for e, _, _ in ready], decoding))
        elapsed = time.perf_counter() - t0
        m = self.metrics
        m.decode_seconds.labels(kind).observe(elapsed)
        m.batch_size.labels(kind).observe(len(items))
        out: list[tuple[Entry, Result | bytes]] = []
        for (entry, _audio, _context), output in zip(ready, outputs):
            job = entry.job
            assert job is not None
            queue_ms = max(0.0, started_ms - job.enqueued) if job.enqueued else 0.0
            m.queue_wait.labels(kind).observe(queue_ms / 1000.0)
            if isinstance(output, DecodeError):
                logger.error("job %s (session %s utt %d) failed to decode: %s", job.id, job.session, job.utt, output)
                out.append((entry, Result.failure(job, "decode: %s" % output, self.id)))
                self._count([entry], "failed")
                continue
            assert isinstance(output, DecodeOutput)
            if output.audio_s > 0:
                m.rtf.labels(kind).observe(output.decode_ms / 1000.0 / output.audio_s)
            out.append(
                (
                    entry,
                    Result.answering(
                        job,
                        text=output.text,
                        language=output.language,
                        words=output.words,
                        audio_s=round(output.audio_s, 3),
                        queue_ms=queue_ms,
                        decode_ms=round(output.decode_ms, 1),
                        decoder=self.id,
                        no_speech=output.no_speech,
                        confidence=output.confidence,
                        segments=output.segments,
                    ),
                )
            )
            self._count([entry], "done")
            logger.debug(
                "job %s (session %s utt %d) decoded in %.0f ms", job.id, job.session, job.utt, output.decode_ms
            )
        return out

    async def _keep_claimed(self, entries: list[Entry], decoding: asyncio.Future[Any]) -> None:
        """While a decode runs: keep its entries ours, well within CLAIM_IDLE_MS."""
        period = max(0.05, self.settings.CLAIM_IDLE_MS / 3000)
        while not decoding.done():
            await asyncio.wait({decoding}, timeout=period)
            if decoding.done():
                return
            try:
                await self.streams.keep_claimed(entries)
            except RedisError as exc:
                logger.warning("could not keep %d entries claimed: %s", len(entries), exc)

    def _count(self, entries: list[Entry], outcome: str, kind: str | None = None) -> None:
        for e in entries:
            self.metrics.jobs.labels(kind or e.kind, outcome).inc()
            if outcome in ("done", "cached", "failed"):
                self._jobs_done += 1
