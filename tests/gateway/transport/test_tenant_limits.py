"""A tenant's limits as the gateway applies them (a real Redis): a resumed session keeps its own
slot and is not a new session of the minute; a caller without a tenant has no limits; what this
gateway holds is what it renews."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from gateway.metrics import GatewayMetrics
from gateway.store.slots import Slots
from gateway.store.usage import UsageStore
from gateway.transport.keyfile import Tenant
from gateway.transport.keyring import ANONYMOUS, Caller
from gateway.transport.metering import Meter
from gateway.transport.tenant_limits import LimitRefused, TenantLimits


def limits(aredis: aioredis.Redis) -> TenantLimits:
    metrics = GatewayMetrics()
    # One fixed instant: the test never straddles a minute.
    return TenantLimits(Slots(aredis), metrics, Meter(UsageStore(aredis), metrics), clock=lambda: 1_800_000_000_000)


async def test_a_resumed_session_keeps_its_slot_and_is_not_a_new_session(aredis: aioredis.Redis) -> None:
    gw_a, gw_b = limits(aredis), limits(aredis)
    bot = Caller(Tenant("bot", b"k" * 32, max_streams=2, sessions_per_minute=3))
    await gw_a.open_session(bot, "s1")
    await gw_a.open_session(bot, "s2")
    with pytest.raises(LimitRefused) as err:
        await gw_b.open_session(bot, "s3")
    assert err.value.limit == "max_streams" and err.value.code == "rate_limit_exceeded"
    # s1's connection drops on gateway A (kept for a resume) and s1 is resumed on gateway B.
    await gw_a.close_session(bot, "s1", keep=True)
    await gw_b.open_session(bot, "s1", resumed=True)  # at the limit, and not a third of the minute
    assert ("bot", "streams", "s1") in gw_b.held and ("bot", "streams", "s1") not in gw_a.held
    await gw_b.close_session(bot, "s1")
    with pytest.raises(LimitRefused) as err:
        await gw_b.open_session(
            bot, "s4"
        )  # a slot is free, but this is the minute's fourth new session (refused tries count)
    assert err.value.limit == "sessions_per_minute"
    await gw_a.open_session(ANONYMOUS, "s5")  # no tenant, no limits
    assert gw_a.held == {("bot", "streams", "s2")}
