"""The gateway's FastAPI app: the WebSocket endpoints, /ready, /status and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Response, WebSocket
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from common import keys
from common.settings import Settings
from gateway.jobqueue import JobQueue
from gateway.metrics import GatewayMetrics
from gateway.router import ResultRouter
from gateway.ws import serve_session

logger = logging.getLogger(__name__)


class GatewayState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.id = settings.gateway_id
        self.redis = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=2.0, socket_timeout=5.0)
        self.queue = JobQueue(self.redis, settings.AUDIO_TTL_S)
        self.router = ResultRouter(self.redis, self.id)
        self.metrics = GatewayMetrics()
        self.stop = asyncio.Event()
        self.started = time.time()

    async def live_decoders(self) -> list[dict[str, str]]:
        out = []
        async for key in self.redis.scan_iter(match=keys.node_pattern("decoder"), count=100):
            info: dict[Any, Any] = await self.redis.hgetall(key)
            if info:
                out.append({k.decode(): v.decode() for k, v in info.items()})
        return out

    async def heartbeat(self) -> None:
        key = keys.node_key("gateway", self.id)
        while not self.stop.is_set():
            with contextlib.suppress(RedisError, OSError):
                pipe = self.redis.pipeline(transaction=True)
                pipe.hset(key, mapping={"id": self.id, "kind": "gateway", "host": socket.gethostname(),
                                        "pid": os.getpid(), "sessions": len(self.router.sessions),
                                        "started": int(self.started), "port": self.settings.PORT})
                pipe.pexpire(key, int(self.settings.NODE_TTL_S * 1000))
                await pipe.execute()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.settings.HEARTBEAT_S)

    async def ticker(self) -> None:
        while not self.stop.is_set():
            for session in list(self.router.sessions.values()):
                try:
                    await session.tick()
                except (RedisError, OSError) as exc:
                    logger.warning("session %s: tick failed: %s", session.id, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.2)


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = GatewayState(settings)
        app.state.gw = state
        tasks = [asyncio.create_task(state.router.run(state.stop), name="results"),
                 asyncio.create_task(state.heartbeat(), name="heartbeat"),
                 asyncio.create_task(state.ticker(), name="ticker")]
        logger.info("gateway %s listening for results on %s", state.id, state.router.channel)
        try:
            yield
        finally:
            state.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(RedisError, OSError):
                await state.redis.delete(keys.node_key("gateway", state.id))
            await state.redis.aclose()
            logger.info("gateway %s stopped", state.id)

    app = FastAPI(title="stt-cluster gateway", lifespan=lifespan)

    @app.websocket("/v1/listen")
    async def listen(ws: WebSocket) -> None:
        await serve_session(ws, app.state.gw)

    @app.websocket("/ws")
    async def listen_alias(ws: WebSocket) -> None:
        await serve_session(ws, app.state.gw)

    @app.get("/ready")
    async def ready() -> Response:
        state: GatewayState = app.state.gw
        try:
            await state.redis.ping()
            decoders = await state.live_decoders()
        except (RedisError, OSError) as exc:
            return JSONResponse({"ready": False, "reason": "redis: %s" % exc}, status_code=503)
        if not decoders:
            return JSONResponse({"ready": False, "reason": "no live decoder"}, status_code=503)
        return JSONResponse({"ready": True, "decoders": len(decoders)})

    @app.get("/status")
    async def status() -> Response:
        state: GatewayState = app.state.gw
        body: dict[str, Any] = {"gateway": state.id, "sessions": len(state.router.sessions),
                                "uptime_s": round(time.time() - state.started, 1)}
        try:
            body["queues"] = {"final": await state.redis.xlen(keys.STREAM_FINAL),
                              "interim": await state.redis.xlen(keys.STREAM_INTERIM)}
            body["decoders"] = [{k: d.get(k) for k in ("id", "model", "device", "compute_type", "jobs_done")}
                                for d in await state.live_decoders()]
        except (RedisError, OSError) as exc:
            body["redis_error"] = str(exc)
        return JSONResponse(body)

    @app.get("/metrics")
    async def metrics() -> Response:
        state: GatewayState = app.state.gw
        state.metrics.sessions.set(len(state.router.sessions))
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
