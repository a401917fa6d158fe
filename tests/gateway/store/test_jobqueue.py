"""The gateway's Redis writes: many sessions' commands share a pipeline, each gets its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ResponseError

from common import keys
from gateway.store.jobqueue import JobQueue


async def test_appends_of_one_turn_share_a_pipeline_and_keep_their_own_lengths(aredis: Any) -> None:
    queue = JobQueue(aredis, 60)
    calls = 0
    execute = aredis.pipeline().__class__.execute

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await execute(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aredis.pipeline().__class__, "execute", counting)
        lengths = await asyncio.gather(*(queue.append_audio("s%d" % i, 0, b"\x01\x00" * (i + 1), 0) for i in range(20)))
    assert lengths == [2 * (i + 1) for i in range(20)]
    assert calls == 1
    assert await aredis.get(keys.audio_key("s3", 0)) == b"\x01\x00" * 4
    assert 0 < await aredis.ttl(keys.audio_key("s3", 0)) <= 60


async def test_a_failing_command_fails_only_its_caller(aredis: Any) -> None:
    queue = JobQueue(aredis, 60)
    # SETRANGE on a stream: WRONGTYPE (past offset 0: a new utterance's first write clears its key).
    await aredis.xadd(keys.audio_key("bad", 0), {"x": "y"})
    good, bad = await asyncio.gather(
        queue.append_audio("good", 0, b"\x00\x00", 0),
        queue.append_audio("bad", 0, b"\x00\x00", 2),
        return_exceptions=True,
    )
    assert good == 2
    assert isinstance(bad, ResponseError) and "WRONGTYPE" in str(bad)


async def test_the_interim_stream_is_capped_and_the_final_stream_is_not(aredis: Any) -> None:
    from common.messages import Job, JobKind

    queue = JobQueue(aredis, 60)
    n = keys.INTERIM_MAXLEN + 3000
    for kind in (JobKind.INTERIM, JobKind.FINAL):
        await asyncio.gather(
            *(
                queue.enqueue(Job(id="j%d" % i, kind=kind, session="s", gateway="g", utt=i, audio_key="a", audio_end=2))
                for i in range(n)
            )
        )
    assert await aredis.xlen(keys.STREAM_INTERIM) <= keys.INTERIM_MAXLEN + 200  # approximately, as Redis trims
    assert await aredis.xlen(keys.STREAM_FINAL) == n
