"""What one gateway process shares between its sessions: settings, Redis, the job queue, the
result router, metrics, who may connect, and the background loops that keep them going."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from common.lifecycle import StopFlag, Watchdog, heartbeat, live_nodes
from common.redisconn import async_client
from common.settings import GatewaySettings
from gateway.metrics import GatewayMetrics
from gateway.store.jobqueue import JobQueue
from gateway.store.slots import Slots
from gateway.store.usage import UsageStore
from gateway.transport.audit import AuditLog
from gateway.transport.keyring import KeyRing
from gateway.transport.metering import Meter
from gateway.transport.router import ResultRouter
from gateway.transport.tenant_limits import TenantLimits

logger = logging.getLogger(__name__)

TICK_S = 0.2  # how often every session checks its deadlines
KEYS_POLL_S = 1.0  # how often API_KEYS_FILE is looked at for a change


class GatewayState:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.id = settings.gateway_id
        self.redis = async_client(settings.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0)
        self.queue = JobQueue(self.redis, settings.AUDIO_TTL_S)
        self.router = ResultRouter(self.redis, self.id)
        self.metrics = GatewayMetrics()
        self.keys = KeyRing(settings.API_KEY, settings.API_KEYS_FILE)
        self.meter = Meter(UsageStore(self.redis), self.metrics)
        self.audit = AuditLog(settings.AUDIT_LOG, settings.AUDIT_LOG_MAX_MB, "stt.audit.%s" % self.id)
        self.limits = TenantLimits(Slots(self.redis, int(settings.TENANT_LEASE_S * 1000)), self.metrics, self.meter)
        self.stop = StopFlag()
        self.draining = StopFlag()  # the server stopped taking connections; it will stop soon
        self.started = time.time()
        self.connections = 0  # accepted WebSockets, started or not
        # The live decoders as last read (every HEARTBEAT_S), so that admission, /ready and
        # /status cost no Redis round trip each.
        self.decoders: list[dict[str, str]] = []
        self.redis_ok = False
        self.watchdog: Watchdog | None = None  # the lifespan's tasks, once started
        self.file_slots = asyncio.Semaphore(settings.MAX_FILE_DECODES)  # uploads decoding at once
        self.warned_no_turn_model = False

    @property
    def turn_model(self) -> bool:
        """Whether sessions that ask for the end-of-turn model get it: a live decoder answers its
        questions (with EOT_MODEL=auto, one that decodes on a GPU)."""
        mode = self.settings.EOT_MODEL
        if mode == "off":
            return False
        serving = [d for d in self.decoders if d.get("turn") == "1"]
        return any(mode == "on" or d.get("device", "").startswith("cuda") for d in serving)

    @property
    def speakers(self) -> bool:
        """Whether a live decoder computes speaker embeddings (its encoder's weights are there)."""
        return any(d.get("speakers") == "1" for d in self.decoders)

    def warn_no_turn_model(self) -> None:
        """Said once: a session asked for the end-of-turn model and no decoder serves it."""
        if not self.warned_no_turn_model:
            self.warned_no_turn_model = True
            logger.warning(
                "the end-of-turn model is not used here (EOT_MODEL=%s; live decoders serving it: %d): "
                "turns end on silence alone",
                self.settings.EOT_MODEL,
                sum(d.get("turn") == "1" for d in self.decoders),
            )

    @property
    def english_only(self) -> bool:
        """Whether every live decoder serves an English-only model."""
        return bool(self.decoders) and all(d.get("multilingual") == "0" for d in self.decoders)

    async def heartbeat(self) -> None:
        await heartbeat(
            self.redis,
            "gateway",
            self.id,
            lambda: {
                "sessions": len(self.router.sessions),
                "files": len(self.router.files),
                "connections": self.connections,
                "port": self.settings.PORT,
            },
            self.settings.HEARTBEAT_S,
            self.settings.NODE_TTL_S,
            self.stop,
        )

    async def watch_decoders(self) -> None:
        while not self.stop.requested:
            await self.refresh_decoders()
            await self.stop.sleep(min(1.0, self.settings.HEARTBEAT_S))

    async def watch_keys(self) -> None:
        """API_KEYS_FILE read again when it changes (KeyRing.reload keeps the last good keys)."""
        while not self.stop.requested:
            self.keys.reload()
            await self.stop.sleep(KEYS_POLL_S)

    async def refresh_decoders(self) -> None:
        try:
            self.decoders = await live_nodes(self.redis, "decoder")
            self.redis_ok = True
        except (RedisError, OSError) as exc:
            if self.redis_ok:
                logger.warning("gateway %s cannot read the live decoders: %s", self.id, exc)
            self.redis_ok = False

    async def tick_sessions(self) -> None:
        """Every TICK_S: each session frees late interim slots, re-queues late finals, drops audio,
        renews its lease; one that can go no further here (taken over, failed) is let go."""
        while not self.stop.requested:
            for session in list(self.router.sessions.values()):
                if not await session.tick():
                    self.router.remove(session)
            await self.stop.sleep(TICK_S)
