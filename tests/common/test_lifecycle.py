"""The stop flag every loop watches, and the node heartbeat `/status` and `/ready` read."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis

from common import keys
from common.lifecycle import StopFlag, heartbeat
from tests.conftest import async_wait_for


async def test_a_stop_cuts_a_sleep_short() -> None:
    stop = StopFlag()
    assert await stop.sleep(0.01) is False
    started = time.monotonic()
    asyncio.get_running_loop().call_later(0.05, stop.request)
    assert await stop.sleep(30) is True
    assert time.monotonic() - started < 5
    assert stop.requested and await stop.sleep(30) is True


async def test_a_heartbeat_keeps_its_key_alive_and_removes_it_when_stopped(aredis: aioredis.Redis) -> None:
    stop = StopFlag()
    beats = 0

    def fields() -> dict[str, Any]:
        nonlocal beats
        beats += 1
        return {"model": "tiny.en", "beats": beats}

    task = asyncio.create_task(heartbeat(aredis, "decoder", "d1", fields, 0.05, 10.0, stop))
    key = keys.node_key("decoder", "d1")
    await async_wait_for(lambda: beats >= 3, 10, "three beats")
    info = await aredis.hgetall(key)
    assert info[b"model"] == b"tiny.en" and info[b"kind"] == b"decoder" and int(info[b"beats"]) >= 2
    assert 0 < await aredis.pttl(key) <= 10_000
    stop.request()
    await asyncio.wait_for(task, 10)
    assert not await aredis.exists(key)
