"""A tenant's limits (API_KEYS_FILE, gateway/transport/keyfile.py) applied when it opens a session
or sends a file, counted over every gateway (gateway/store/slots.py):

- `max_streams`: live sessions at once. A session holds its slot from its start to its end; a
  resumed session keeps the one it had (the same holder). A connection that drops without ending
  a resumable session stops renewing its slot: the slot comes back within the lease (30 s)
  unless the session is resumed first. So do a SIGKILLed gateway's.
- `sessions_per_minute`: new sessions (not resumes) in a minute, refused attempts included.
- `max_files`: uploads in flight at once.
- `audio_seconds_per_day`: live and file audio per UTC day (gateway/transport/metering.py counts
  it). A session or file is refused once the day's audio is used up; a session that uses it up
  while it streams gets its owed finals, then the error (`insufficient_quota`), then close 4429:
  the audio accepted before is all decoded. A new UTC day starts afresh.

A refusal is a `LimitRefused` naming the limit, with the wait to suggest; the wire protocols say
it their own way (native and Deepgram: an error then close 4429; OpenAI: an error event with code
`rate_limit_exceeded`; files: HTTP 429 with Retry-After). Callers without a tenant (API_KEY's keys,
or no keys at all) have no limits. Redis unreachable: refused too (the session could not work).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from common.errors import SttError
from common.lifecycle import StopFlag
from gateway.metrics import GatewayMetrics
from gateway.store.slots import Slots
from gateway.transport.keyfile import Tenant
from gateway.transport.keyring import Caller
from gateway.transport.metering import Meter

logger = logging.getLogger(__name__)


class LimitRefused(SttError):
    def __init__(self, tenant: str, limit: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.tenant, self.limit, self.message, self.retry_after_s = tenant, limit, message, retry_after_s
        self.code = "insufficient_quota" if limit == "audio_seconds_per_day" else "rate_limit_exceeded"


def wall_ms() -> int:
    return int(time.time() * 1000)


class TenantLimits:
    def __init__(self, slots: Slots, metrics: GatewayMetrics, meter: Meter, clock: Callable[[], int] = wall_ms) -> None:
        self.slots = slots
        self.metrics = metrics
        self.meter = meter  # today's audio per tenant (audio_seconds_per_day)
        self.clock = clock
        self.held: set[tuple[str, str, str]] = set()  # (tenant, kind, holder) this gateway renews

    def _refuse(self, tenant: str, limit: str, message: str, retry_after_s: int) -> LimitRefused:
        self.metrics.limit_refusals.labels(tenant, limit).inc()
        logger.info("tenant %s refused: %s", tenant, message)
        return LimitRefused(tenant, limit, message, retry_after_s)

    async def open_session(self, caller: Caller, session_id: str, resumed: bool = False) -> None:
        """Take the session's slot (LimitRefused: refused; nothing is held then)."""
        tenant = caller.tenant
        if tenant is None:
            return
        now = self.clock()
        try:
            await self._quota(tenant)
            if not resumed and tenant.sessions_per_minute is not None:
                started = await self.slots.start(tenant.name, now)
                if started > tenant.sessions_per_minute:
                    wait = 60 - (now // 1000) % 60
                    raise self._refuse(
                        tenant.name,
                        "sessions_per_minute",
                        "key %s may start %d sessions a minute (sessions_per_minute); try again in %d s"
                        % (tenant.name, tenant.sessions_per_minute, wait),
                        wait,
                    )
            await self._take(tenant.name, "streams", session_id, tenant.max_streams, "max_streams", "live sessions")
        except RedisError as exc:
            raise LimitRefused(tenant.name, "store", "the service cannot check its limits now (%s)" % exc, 5) from exc

    async def _quota(self, tenant: Tenant) -> None:
        """Refused when the tenant's audio today is already at its audio_seconds_per_day."""
        if tenant.audio_seconds_per_day is not None:
            await self.meter.refresh(tenant.name)
            if self.over_quota(tenant):
                raise self._refuse(
                    tenant.name, "audio_seconds_per_day", self.quota_message(tenant), self.until_tomorrow()
                )

    def over_quota(self, tenant: Tenant) -> bool:
        limit = tenant.audio_seconds_per_day
        return limit is not None and self.meter.used(tenant.name) >= limit

    def quota_message(self, tenant: Tenant) -> str:
        return "key %s has used its %d audio seconds of today (UTC; audio_seconds_per_day); it may go on in %d s" % (
            tenant.name,
            tenant.audio_seconds_per_day or 0,
            self.until_tomorrow(),
        )

    def until_tomorrow(self) -> int:
        return int(86400 - self.meter.clock() % 86400) + 1

    def refused_mid_stream(self, tenant: Tenant) -> LimitRefused:
        return self._refuse(tenant.name, "audio_seconds_per_day", self.quota_message(tenant), self.until_tomorrow())

    async def _take(self, tenant: str, kind: str, holder: str, limit: int | None, name: str, what: str) -> None:
        if limit is None:
            return
        if not await self.slots.take(tenant, kind, holder, limit, self.clock()):
            raise self._refuse(
                tenant,
                name,
                "key %s has %d %s at once, its limit (%s); try again when one ends" % (tenant, limit, what, name),
                5,
            )
        self.held.add((tenant, kind, holder))

    async def close_session(self, caller: Caller, session_id: str, keep: bool = False) -> None:
        """The session left this gateway: its slot given back, or (`keep`: it may be resumed)
        left to lapse unless a resume takes it first."""
        await self._give_back(caller, "streams", session_id, keep)

    async def open_file(self, caller: Caller, request_id: str) -> None:
        tenant = caller.tenant
        if tenant is None:
            return
        try:
            await self._quota(tenant)
            await self._take(tenant.name, "files", request_id, tenant.max_files, "max_files", "uploads in flight")
        except RedisError as exc:
            raise LimitRefused(tenant.name, "store", "the service cannot check its limits now (%s)" % exc, 5) from exc

    async def close_file(self, caller: Caller, request_id: str) -> None:
        await self._give_back(caller, "files", request_id, False)

    async def _give_back(self, caller: Caller, kind: str, holder: str, keep: bool) -> None:
        tenant = caller.tenant
        if tenant is None:
            return
        self.held.discard((tenant.name, kind, holder))
        if keep:
            return
        try:
            await self.slots.give_back(tenant.name, kind, holder)
        except RedisError as exc:  # the lease lapses by itself
            logger.warning("tenant %s: could not give back %s slot %s (%s); it lapses", tenant.name, kind, holder, exc)

    async def run(self, stop: StopFlag) -> None:
        """Renew this gateway's slots' leases until `stop` (a watchdog task of the gateway)."""
        while not stop.requested:
            try:
                await self.slots.renew(sorted(self.held), self.clock())
            except RedisError as exc:
                logger.warning("could not renew %d tenant slots: %s", len(self.held), exc)
            await stop.sleep(self.slots.lease_ms / 3000)
