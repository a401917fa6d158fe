"""A tenant's limits held cluster-wide in Redis, so every gateway counts the same (the policy of
which limit applies is gateway/transport/limits_tenant.py's).

- Slots (live sessions, uploads in flight): a sorted set per tenant and kind, of holders scored by
  their lease's expiry. Taking one drops the expired, then adds the holder if it is already there
  (a resumed session keeps its slot) or if fewer than the limit are held, atomically (one Lua
  script). The gateway holding a slot renews its lease every LEASE_MS / 3; a gateway that dies
  (SIGKILL) stops renewing, and its slots come back within LEASE_MS.
- New sessions per minute: a counter per tenant and minute, expiring after two.
"""

from __future__ import annotations

from typing import Any

from common import keys

LEASE_MS = 30_000

_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""


class Slots:
    def __init__(self, redis: Any, lease_ms: int = LEASE_MS) -> None:
        self.redis = redis
        self.lease_ms = lease_ms
        self._take = redis.register_script(_TAKE)

    async def take(self, tenant: str, kind: str, holder: str, limit: int, now_ms: int) -> bool:
        """Whether `holder` holds one of the tenant's `limit` slots of `kind` now."""
        key = keys.tenant_slots(tenant, kind)
        got = await self._take(keys=[key], args=[now_ms, now_ms + self.lease_ms, holder, limit, 2 * self.lease_ms])
        return bool(got)

    async def renew(self, held: list[tuple[str, str, str]], now_ms: int) -> None:
        """Extend the leases of (tenant, kind, holder) slots this gateway holds (only those
        still there: one that lapsed is not taken back behind the limit's back)."""
        if not held:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for tenant, kind, holder in held:
                pipe.zadd(keys.tenant_slots(tenant, kind), {holder: now_ms + self.lease_ms}, xx=True)
            await pipe.execute()

    async def give_back(self, tenant: str, kind: str, holder: str) -> None:
        await self.redis.zrem(keys.tenant_slots(tenant, kind), holder)

    async def held(self, tenant: str, kind: str, now_ms: int) -> int:
        key = keys.tenant_slots(tenant, kind)
        return int(await self.redis.zcount(key, now_ms, "+inf"))

    async def start(self, tenant: str, now_ms: int) -> int:
        """Count one new session of the tenant in this minute; how many there were with it."""
        key = keys.tenant_starts(tenant, now_ms // 60_000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
        return int(count)
