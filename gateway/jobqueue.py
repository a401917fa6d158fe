"""The gateway's side of the job streams: audio APPENDed once, jobs naming a byte range of it."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from common import keys
from common.messages import Job, encode_job


def now_ms() -> int:
    return int(time.time() * 1000)


class JobQueue:
    def __init__(self, redis: aioredis.Redis, audio_ttl_s: int) -> None:
        self.redis = redis
        self.audio_ttl_s = audio_ttl_s

    async def append_audio(self, session: str, utt: int, pcm16k: bytes) -> int:
        """Append to the utterance's audio; returns its length in bytes. TTL refreshed each time."""
        key = keys.audio_key(session, utt)
        pipe = self.redis.pipeline(transaction=True)
        pipe.append(key, pcm16k)
        pipe.expire(key, self.audio_ttl_s)
        length, _ = await pipe.execute()
        return int(length)

    async def enqueue(self, job: Job) -> str:
        if not job.enqueued:
            job.enqueued = now_ms()
        entry_id = await self.redis.xadd(keys.stream_for(job.kind), {keys.JOB_FIELD: encode_job(job)})
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def final_backlog(self) -> int:
        return int(await self.redis.xlen(keys.STREAM_FINAL))

    async def drop_audio(self, session: str, utt: int) -> None:
        await self.redis.delete(keys.audio_key(session, utt))
