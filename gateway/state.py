"""What one gateway process shares between its sessions: settings, Redis, the job queue, the
result router, metrics, and the background loops that keep them going."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common import keys
from common.lifecycle import StopFlag, heartbeat
from common.settings import Settings
from gateway.jobqueue import JobQueue
from gateway.metrics import GatewayMetrics
from gateway.router import ResultRouter

logger = logging.getLogger(__name__)

TICK_S = 0.2  # how often every session checks its deadlines


class GatewayState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.id = settings.gateway_id
        self.redis = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0)
        self.queue = JobQueue(self.redis, settings.AUDIO_TTL_S)
        self.router = ResultRouter(self.redis, self.id)
        self.metrics = GatewayMetrics()
        self.stop = StopFlag()
        self.started = time.time()

    async def live_decoders(self) -> list[dict[str, str]]:
        out = []
        async for key in self.redis.scan_iter(match=keys.node_pattern("decoder"), count=100):
            info: dict[Any, Any] = await self.redis.hgetall(key)
            if info:
                out.append({k.decode(): v.decode() for k, v in info.items()})
        return out

    async def heartbeat(self) -> None:
        await heartbeat(
            self.redis,
            "gateway",
            self.id,
            lambda: {"sessions": len(self.router.sessions), "port": self.settings.PORT},
            self.settings.HEARTBEAT_S,
            self.settings.NODE_TTL_S,
            self.stop,
        )

    async def tick_sessions(self) -> None:
        """Every TICK_S: each session frees late interim slots, re-queues late finals, drops audio."""
        while not self.stop.requested:
            for session in list(self.router.sessions.values()):
                try:
                    await session.tick()
                except (RedisError, OSError) as exc:
                    logger.warning("session %s: tick failed: %s", session.id, exc)
            await self.stop.sleep(TICK_S)
