"""The gateway's FastAPI app: the WebSocket endpoints, /ready, /status and /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket
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
        await state.refresh_decoders()
        router = asyncio.create_task(state.router.run(state.stop), name="results")
        tasks = [
            router,
            asyncio.create_task(state.heartbeat(), name="heartbeat"),
            asyncio.create_task(state.tick_sessions(), name="ticker"),
            asyncio.create_task(state.watch_decoders(), name="decoders"),
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

    def gateway() -> GatewayState:
        state: GatewayState = app.state.gw
        return state

    def unauthorized(request: Request) -> Response | None:
        """A 401 for a caller without a key, where keys are required."""
        if gateway().keys.accepts(request.headers, request.query_params):
            return None
        return JSONResponse(
            {"error": "unauthorized", "message": "missing or wrong API key"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.websocket("/v1/listen")
    async def listen(ws: WebSocket) -> None:
        await serve_session(ws, gateway())

    @app.websocket("/ws")
    async def listen_alias(ws: WebSocket) -> None:
        await serve_session(ws, gateway())

    @app.get("/ready")
    async def ready() -> Response:
        state = gateway()
        try:
            await state.redis.ping()
        except (RedisError, OSError):
            return JSONResponse({"ready": False, "reason": "Redis does not answer"}, status_code=503)
        if not state.decoders:
            return JSONResponse({"ready": False, "reason": "no live decoder"}, status_code=503)
        return JSONResponse({"ready": True, "decoders": len(state.decoders)})

    @app.get("/status")
    async def status(request: Request) -> Response:
        if (refused := unauthorized(request)) is not None:
            return refused
        state = gateway()
        body: dict[str, Any] = {
            "gateway": state.id,
            "sessions": len(state.router.sessions),
            "connections": state.connections,
            "uptime_s": round(time.time() - state.started, 1),
            "decoders": [
                {k: d.get(k) for k in ("id", "model", "device", "compute_type", "jobs_done")} for d in state.decoders
            ],
        }
        try:
            pipe = state.redis.pipeline(transaction=False)
            pipe.xlen(keys.STREAM_FINAL)
            pipe.xlen(keys.STREAM_INTERIM)
            final, interim = await pipe.execute()
            body["queues"] = {"final": final, "interim": interim}
        except (RedisError, OSError):
            body["queues"] = None
        return JSONResponse(body)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if (refused := unauthorized(request)) is not None:
            return refused
        state = gateway()
        state.metrics.sessions.set(len(state.router.sessions))
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
