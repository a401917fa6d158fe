"""What each tenant uses, counted as it happens and written to Redis every FLUSH_S
(gateway/store/usage.py): live audio as it is accepted, sessions as they start, files as they
are answered (their audio), finals as they are sent. `stt_audio_seconds_total{tenant}` counts
the same audio at once. A gateway killed loses at most its last FLUSH_S of counts."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from common import keys
from common.lifecycle import StopFlag
from gateway.metrics import GatewayMetrics
from gateway.store.usage import UsageStore
from gateway.transport.keyring import Caller

logger = logging.getLogger(__name__)

FLUSH_S = 1.0


def utc_day(wall_s: float) -> str:
    return datetime.datetime.fromtimestamp(wall_s, datetime.UTC).strftime("%Y-%m-%d")


def tenant_of(caller: Caller) -> str:
    return caller.name or keys.UNNAMED_TENANT


class Meter:
    def __init__(self, store: UsageStore, metrics: GatewayMetrics, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.pending: dict[tuple[str, str], dict[str, float]] = {}
        # Each (tenant, day)'s audio seconds over every gateway as of the last write or read.
        self.known: dict[tuple[str, str], float] = {}

    def count(self, caller: Caller, field: str, amount: float = 1.0) -> None:
        tenant = tenant_of(caller)
        fields = self.pending.setdefault((tenant, utc_day(self.clock())), {})
        fields[field] = fields.get(field, 0.0) + amount
        if field == "audio_seconds":
            self.metrics.tenant_audio_seconds.labels(tenant).inc(amount)

    def today(self) -> str:
        return utc_day(self.clock())

    def used(self, tenant: str) -> float:
        """The tenant's audio seconds today: over every gateway as last known, and this
        gateway's not yet written."""
        key = (tenant, self.today())
        return self.known.get(key, 0.0) + self.pending.get(key, {}).get("audio_seconds", 0.0)

    async def refresh(self, tenant: str) -> float:
        """`used`, with the total read from Redis first (a session or file about to start)."""
        day = self.today()
        total = await self.store.audio_seconds(tenant, day)
        self.known[(tenant, day)] = max(total, self.known.get((tenant, day), 0.0))
        return self.used(tenant)

    async def flush(self) -> None:
        pending, self.pending = self.pending, {}
        try:
            totals = await self.store.add(pending)
            today = self.today()
            self.known = {k: v for k, v in {**self.known, **totals}.items() if k[1] == today}
        except RedisError as exc:  # kept for the next flush
            logger.warning("could not write usage (%s); trying again", exc)
            for key, fields in pending.items():
                mine = self.pending.setdefault(key, {})
                for field, amount in fields.items():
                    mine[field] = mine.get(field, 0.0) + amount

    async def run(self, stop: StopFlag) -> None:
        """Write the counts every FLUSH_S until `stop`, then once more (a watchdog task)."""
        while not stop.requested:
            await stop.sleep(FLUSH_S)
            await self.flush()
        await self.flush()
