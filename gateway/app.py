"""The gateway's FastAPI app: the WebSocket endpoints, /ready, /status and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Response, WebSocket
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from common import keys
from common.settings import Settings
from gateway.state import GatewayState
from gateway.ws import serve_session

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = GatewayState(settings)
        app.state.gw = state
        router = asyncio.create_task(state.router.run(state.stop), name="results")
        tasks = [
            router,
            asyncio.create_task(state.heartbeat(), name="heartbeat"),
            asyncio.create_task(state.tick_sessions(), name="ticker"),
        ]
        logger.info("gateway %s listening for results on %s", state.id, state.router.channel)
        try:
            yield
        finally:
            state.stop.request()
            # The sessions are gone (uvicorn closed them first): no result can reach anyone, so the
            # router has nothing to finish and is not waited for.
            router.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
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
        body: dict[str, Any] = {
            "gateway": state.id,
            "sessions": len(state.router.sessions),
            "uptime_s": round(time.time() - state.started, 1),
        }
        try:
            body["queues"] = {
                "final": await state.redis.xlen(keys.STREAM_FINAL),
                "interim": await state.redis.xlen(keys.STREAM_INTERIM),
            }
            body["decoders"] = [
                {k: d.get(k) for k in ("id", "model", "device", "compute_type", "jobs_done")}
                for d in await state.live_decoders()
            ]
        except (RedisError, OSError) as exc:
            body["redis_error"] = str(exc)
        return JSONResponse(body)

    @app.get("/metrics")
    async def metrics() -> Response:
        state: GatewayState = app.state.gw
        state.metrics.sessions.set(len(state.router.sessions))
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
