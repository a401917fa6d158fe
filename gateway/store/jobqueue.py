"""The gateway's side of the job streams: audio APPENDed once, jobs naming a byte range of it.

Writes from every session of the process that are issued in the same event-loop turn go to
Redis in one pipeline: with hundreds of streams a round trip per 100 ms chunk per session would
cost more CPU than VAD and resampling together. Each caller still awaits its own commands, so a
session's job is only queued after the audio it names is in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import redis.asyncio as aioredis

from common import keys, queues
from common.backoff import Backoff
from common.clock import now_ms
from common.lifecycle import REDIS_TRANSIENT
from common.messages import Job, JobKind, encode_job

logger = logging.getLogger(__name__)

Command = tuple[Any, ...]  # (pipeline method name, *args)
RIDE_THROUGH_S = 15.0  # how long writes wait for Redis to come back (a restart takes ~1 s)
CANCEL_TTL_MS = 60_000  # far longer than a speculative job waits before it is shed


class WriteBatcher:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._pending: list[tuple[tuple[Command, ...], asyncio.Future[list[Any]]]] = []
        self._flush: asyncio.Task[None] | None = None

    async def pipelined(self, *commands: Command) -> list[Any]:
        """Send `commands` in the pipeline this event-loop turn shares; their replies, in order."""
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((commands, fut))
        if self._flush is None:
            self._flush = asyncio.create_task(self._send())
        return await fut

    async def _send(self) -> None:
        await asyncio.sleep(0)  # let the other sessions of this turn join the batch
        batch, self._pending, self._flush = self._pending, [], None
        try:
            results = await self._execute(batch)
        except Exception as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except BaseException:  # cancelled with the gateway: so are the writes it carried
            for _, fut in batch:
                fut.cancel()
            raise
        i = 0
        for commands, fut in batch:
            mine = results[i : i + len(commands)]
            i += len(commands)
            if fut.done():
                continue
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(mine)

    async def _execute(self, batch: list[tuple[tuple[Command, ...], asyncio.Future[list[Any]]]]) -> list[Any]:
        """Run the batch; through a short Redis outage (a restart) it is sent again until
        RIDE_THROUGH_S: every command a session sends is idempotent (audio is written at its
        offset, a job queued twice is answered once), so a batch that half-reached Redis before
        the connection broke may be repeated."""
        backoff = Backoff(first=0.05, cap=1.0)
        deadline = time.monotonic() + RIDE_THROUGH_S
        while True:
            pipe = self.redis.pipeline(transaction=False)
            for commands, _ in batch:
                for name, *args in commands:
                    getattr(pipe, name)(*args)
            try:
                results: list[Any] = await pipe.execute(raise_on_error=False)
                if backoff.failing:
                    logger.info("Redis answers again; %d writes went through", len(batch))
                return results
            except REDIS_TRANSIENT as exc:
                delay = backoff.next()
                if time.monotonic() + delay > deadline:
                    raise
                if backoff.attempts == 1:
                    logger.warning("Redis write failed (%s); retrying for up to %.0fs", exc, RIDE_THROUGH_S)
                await asyncio.sleep(delay)


class Queue(Protocol):
    """What a session needs of the job streams (Redis in the service, memory in unit tests and
    the accuracy simulation)."""

    async def append_audio(self, session: str, utt: int, pcm16k: bytes, offset: int) -> int: ...

    async def enqueue(self, job: Job) -> str: ...

    async def restore_audio(self, session: str, utt: int, pcm16k: bytes) -> None: ...

    async def cancel(self, job_id: str) -> None: ...

    async def drop_audio(self, session: str, *utts: int) -> None: ...


class JobQueue:
    def __init__(self, redis: aioredis.Redis, audio_ttl_s: int) -> None:
        self.redis = redis
        self.audio_ttl_s = audio_ttl_s
        self.writes = WriteBatcher(redis)

    async def append_audio(self, session: str, utt: int, pcm16k: bytes, offset: int) -> int:
        """Add to the utterance's audio at `offset` (its length so far: written twice, it is
        still there once); returns its length in bytes. TTL refreshed each time."""
        key = keys.audio_key(session, utt)
        if offset == 0:
            # A new utterance: nothing of a number used before (and given up) may remain.
            _, length, _ = await self.writes.pipelined(
                ("delete", key), ("setrange", key, 0, pcm16k), ("expire", key, self.audio_ttl_s)
            )
            return int(length)
        length, _ = await self.writes.pipelined(("setrange", key, offset, pcm16k), ("expire", key, self.audio_ttl_s))
        return int(length)

    async def restore_audio(self, session: str, utt: int, pcm16k: bytes) -> None:
        """Write an utterance's whole audio again, from offset 0 (what survived is overwritten
        with the same bytes): after a failover the promoted replica may lack its newest appends."""
        key = keys.audio_key(session, utt)
        await self.writes.pipelined(("setrange", key, 0, pcm16k), ("expire", key, self.audio_ttl_s))

    async def enqueue(self, job: Job) -> str:
        if not job.enqueued:
            job.enqueued = now_ms()
        # Interims are capped (approximately): a late one is worth nothing, and the cap bounds what
        # a stalled cluster holds. Finals never are: each is an utterance a client waits for.
        maxlen = keys.INTERIM_MAXLEN if job.kind == JobKind.INTERIM else None
        [entry_id] = await self.writes.pipelined(
            ("xadd", keys.stream_for(job.kind), {keys.JOB_FIELD: encode_job(job)}, "*", maxlen, True)
        )
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def cancel(self, job_id: str) -> None:
        """A job is no longer wanted: a decoder that has not started it drops it."""
        await self.writes.pipelined(("set", keys.cancelled_key(job_id), b"1", None, CANCEL_TTL_MS))

    async def final_backlog(self) -> int:
        return (await queues.depths(self.redis, [keys.STREAM_FINAL], keys.GROUP))[keys.STREAM_FINAL]

    async def drop_audio(self, session: str, *utts: int) -> None:
        if utts:
            await self.writes.pipelined(("delete", *(keys.audio_key(session, n) for n in utts)))


class MemoryQueue:
    """A Queue in memory: audio in a dict, queued jobs in a list for the caller to take."""

    def __init__(self) -> None:
        self.audio: dict[str, bytes] = {}
        self.jobs: list[Job] = []
        self.cancelled: set[str] = set()

    async def append_audio(self, session: str, utt: int, pcm16k: bytes, offset: int) -> int:
        key = keys.audio_key(session, utt)
        self.audio[key] = self.audio.get(key, b"")[:offset] + pcm16k
        return len(self.audio[key])

    async def restore_audio(self, session: str, utt: int, pcm16k: bytes) -> None:
        key = keys.audio_key(session, utt)
        self.audio[key] = pcm16k + self.audio.get(key, b"")[len(pcm16k) :]

    async def enqueue(self, job: Job) -> str:
        if not job.enqueued:
            job.enqueued = now_ms()
        self.jobs.append(job)
        return "%d-0" % len(self.jobs)

    async def cancel(self, job_id: str) -> None:
        self.cancelled.add(job_id)

    async def drop_audio(self, session: str, *utts: int) -> None:
        for n in utts:
            self.audio.pop(keys.audio_key(session, n), None)

    def audio_of(self, job: Job) -> tuple[bytes, bytes]:
        """The job's audio range and its context's (empty when it has none or it is gone)."""
        context = self.audio.get(job.context_key, b"")[: job.context_end] if job.context_key else b""
        return self.audio.get(job.audio_key, b"")[: job.audio_end], context
