"""Usage per tenant per UTC day in Redis: audio seconds (live and files), sessions, files and
finals, kept USAGE_DAYS days (each day's hash expires that long after its last write)."""

from __future__ import annotations

from typing import Any

from common import keys

USAGE_DAYS = 90
FIELDS = ("audio_seconds", "sessions", "files", "finals")


class UsageStore:
    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def add(self, counts: dict[tuple[str, str], dict[str, float]]) -> dict[tuple[str, str], float]:
        """Add {(tenant, day): {field: amount}} in one round trip; the audio seconds of each
        (tenant, day) now recorded, over every gateway."""
        if not counts:
            return {}
        totals: list[tuple[tuple[str, str], int]] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            n = 0
            for (tenant, day), fields in counts.items():
                key = keys.usage_key(tenant, day)
                pipe.hincrbyfloat(key, "audio_seconds", round(fields.get("audio_seconds", 0.0), 3))
                totals.append(((tenant, day), n))
                n += 1
                for field, amount in fields.items():
                    if field != "audio_seconds":
                        pipe.hincrby(key, field, int(amount))
                        n += 1
                pipe.expire(key, USAGE_DAYS * 86400)
                pipe.sadd(keys.USAGE_TENANTS, tenant)
                pipe.expire(keys.USAGE_TENANTS, USAGE_DAYS * 86400)  # every key expires; written daily
                n += 3
            got = await pipe.execute()
        return {pair: float(got[i]) for pair, i in totals}

    async def audio_seconds(self, tenant: str, day: str) -> float:
        value = await self.redis.hget(keys.usage_key(tenant, day), "audio_seconds")
        return float(value or 0.0)

    async def tenants(self) -> list[str]:
        return sorted(t.decode() if isinstance(t, bytes) else t for t in await self.redis.smembers(keys.USAGE_TENANTS))

    async def read(self, tenants: list[str], days: list[str]) -> list[dict[str, Any]]:
        """A row per tenant and day with any usage, in that order."""
        pairs = [(t, d) for t in tenants for d in days]
        async with self.redis.pipeline(transaction=False) as pipe:
            for tenant, day in pairs:
                pipe.hgetall(keys.usage_key(tenant, day))
            got = await pipe.execute()
        rows = []
        for (tenant, day), raw in zip(pairs, got):
            if not raw:
                continue
            values = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
            row: dict[str, Any] = {"tenant": tenant, "day": day}
            for field in FIELDS:
                value = values.get(field, 0.0)
                row[field] = round(value, 3) if field == "audio_seconds" else int(value)
            rows.append(row)
        return rows
