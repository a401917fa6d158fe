"""Test helpers that put real jobs on the real streams and collect real results."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from common import keys
from common.audio import float32_to_pcm16
from common.messages import Job, Result, decode_result
from common.redisconn import close_pubsub
from gateway.store.jobqueue import JobQueue


async def put_job(
    r: aioredis.Redis,
    audio: np.ndarray | None,
    *,
    kind: str = "final",
    session: str = "s1",
    utt: int = 0,
    rev: int = 0,
    gateway: str = "gw-test",
    **fields: Any,
) -> Job:
    queue = JobQueue(r, 600)
    end = 0
    if audio is not None and len(audio):
        end = await queue.append_audio(session, utt, float32_to_pcm16(audio), 0)
    job_id = keys.final_job_id(session, utt) if kind != "interim" else keys.interim_job_id(session, utt, rev)
    values: dict[str, Any] = dict(
        id=job_id,
        kind=kind,
        session=session,
        gateway=gateway,
        utt=utt,
        rev=rev,
        audio_key=keys.audio_key(session, utt),
        audio_end=end,
        lang="en",
    )
    if kind == "interim":
        values["deadline"] = int(time.time() * 1000) + 60_000
    values.update(fields)
    job = Job(**values)
    await queue.enqueue(job)
    return job


class ResultCollector:
    """Subscribes to a gateway's result channel and keeps every result in arrival order."""

    def __init__(self, r: aioredis.Redis, gateway: str = "gw-test") -> None:
        self.redis = r
        self.channel = keys.results_channel(gateway)
        self.results: list[Result] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> ResultCollector:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.channel)
        self._ready.set()
        try:
            async for msg in pubsub.listen():
                if msg["type"] == "message":
                    self.results.append(decode_result(msg["data"]))
        finally:
            await close_pubsub(pubsub)

    async def wait(self, n: int, timeout: float = 30.0) -> list[Result]:
        deadline = time.monotonic() + timeout
        while len(self.results) < n:
            if time.monotonic() > deadline:
                raise AssertionError("got %d of %d results: %r" % (len(self.results), n, self.results))
            await asyncio.sleep(0.01)
        return self.results


async def stream_state(r: aioredis.Redis) -> dict[str, tuple[int, int]]:
    """{stream: (length, pending)} for both job streams."""
    out = {}
    for stream in (keys.STREAM_FINAL, keys.STREAM_INTERIM):
        length = await r.xlen(stream)
        pending = 0
        with contextlib.suppress(Exception):
            pending = (await r.xpending(stream, keys.GROUP))["pending"]
        out[stream] = (int(length), int(pending))
    return out


@contextlib.asynccontextmanager
async def running_worker(settings: Any, engine: Any, turn_model: Any = None) -> AsyncIterator[Any]:
    from decoder.worker import DecoderWorker

    worker = DecoderWorker(settings, engine, turn_model=turn_model)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop.request()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def writes_paused(r: aioredis.Redis) -> AsyncIterator[None]:
    """Redis answers reads but holds every write (CLIENT PAUSE WRITE) until the block ends: a
    decoder that took a job can decode it but cannot publish, cache or acknowledge a result."""
    await r.client_pause(60_000, all=False)
    try:
        yield
    finally:
        await r.client_unpause()
