"""A tenant's slots in a real Redis: the limit holds over every holder, a holder keeps its own
slot, a lapsed lease frees it, renewal keeps it, and the per-minute counter."""

from __future__ import annotations

import redis.asyncio as aioredis

from gateway.store.slots import Slots


async def test_slots_hold_the_limit_and_come_back_when_given_back_or_lapsed(aredis: aioredis.Redis) -> None:
    slots = Slots(aredis, lease_ms=1000)
    assert await slots.take("t", "streams", "s1", 2, now_ms=0)
    assert await slots.take("t", "streams", "s2", 2, now_ms=10)
    assert not await slots.take("t", "streams", "s3", 2, now_ms=20)
    assert await slots.take("t", "streams", "s1", 2, now_ms=30), "a holder keeps its own slot (a resume)"
    assert await slots.take("u", "streams", "s3", 2, now_ms=30), "another tenant is not counted"
    assert await slots.take("t", "files", "f1", 1, now_ms=30), "nor another kind"
    await slots.give_back("t", "streams", "s2")
    assert await slots.take("t", "streams", "s3", 2, now_ms=40)
    assert await slots.held("t", "streams", now_ms=40) == 2
    # s1 and s3 renewed at 900 (to 1900); nobody renews s3 after: at 2000 it lapsed.
    await slots.renew([("t", "streams", "s1"), ("t", "streams", "s3")], now_ms=900)
    assert not await slots.take("t", "streams", "s4", 2, now_ms=1500)
    await slots.renew([("t", "streams", "s1")], now_ms=1600)
    assert await slots.take("t", "streams", "s4", 2, now_ms=2000)
    await slots.renew([("t", "streams", "s3")], now_ms=2100)  # lapsed: renewing does not take it back
    assert await slots.held("t", "streams", now_ms=2100) == 2


async def test_new_sessions_are_counted_per_minute(aredis: aioredis.Redis) -> None:
    slots = Slots(aredis)
    assert [await slots.start("t", 60_000 + i) for i in range(3)] == [1, 2, 3]
    assert await slots.start("t", 120_000) == 1
    assert 0 < await aredis.ttl("stt:tenant:t:starts:1") <= 120
