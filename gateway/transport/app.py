"""The gateway's FastAPI app: the WebSocket endpoints, /ready, /status and /metrics."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from common import keys, queues, redisconn
from common.lifecycle import Watchdog
from common.settings import GatewaySettings
from gateway.files.http import transcribe_upload
from gateway.protocols.deepgram import DeepgramAdapter
from gateway.protocols.deepgram_query import speaks_deepgram
from gateway.protocols.flux import FluxAdapter
from gateway.protocols.native import NativeAdapter
from gateway.protocols.openai import OpenAIAdapter
from gateway.transport.auth import offered_subprotocol
from gateway.transport.handler import serve
from gateway.transport.keyring import ANONYMOUS
from gateway.transport.process import GatewayState
from gateway.transport.tenant_limits import LimitRefused
from gateway.transport.usage_api import usage_response

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent.parent / "static"


def create_app(settings: GatewaySettings, on_fatal: Callable[[str], None] | None = None) -> FastAPI:
    """The gateway app. `on_fatal(reason)` is called if one of its long-lived tasks dies: the
    gateway is then broken (`/ready` says why) and its server should exit non-zero."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = GatewayState(settings)
        app.state.gw = state
        await state.refresh_decoders()
        watchdog = Watchdog(state.stop, on_fatal)
        state.watchdog = watchdog
        watchdog.start(state.router.run(state.stop), "results")
        watchdog.start(state.heartbeat(), "heartbeat")
        watchdog.start(state.tick_sessions(), "ticker")
        watchdog.start(state.watch_decoders(), "decoders")
        watchdog.start(state.limits.run(state.stop), "tenant-slots")
        watchdog.start(state.meter.run(state.stop), "usage")
        if settings.API_KEYS_FILE:
            watchdog.start(state.watch_keys(), "keys-file")
        logger.info("gateway %s listening for results on %s", state.id, state.router.channel)
        try:
            yield
        finally:
            # The sessions are gone (uvicorn closed them first): no result can reach anyone, so
            # nothing is left for the router to finish; the heartbeat removes itself.
            await watchdog.finish(timeout=2.0)
            await redisconn.aclose(state.redis)
            state.audit.close()
            logger.info("gateway %s stopped", state.id)

    app = FastAPI(title="stt-cluster gateway", lifespan=lifespan)

    def gateway() -> GatewayState:
        state: GatewayState = app.state.gw
        return state

    def unauthorized(request: Request, operators: bool = False) -> Response | None:
        """A 401 for a caller without a key, where keys are required; with `operators` (/status,
        /metrics: every tenant's names and counts), a 403 for a tenant's key that is not admin."""
        caller = gateway().keys.identify(request.headers, request.query_params)
        if caller is None:
            return JSONResponse(
                {"error": "unauthorized", "message": "missing or wrong API key"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if operators and caller.tenant is not None and not caller.tenant.admin:
            message = "key %s may not read this (an API_KEY key or an admin key may)" % caller.tenant.name
            return JSONResponse({"error": "forbidden", "message": message}, status_code=403)
        return None

    @app.websocket("/v1/listen")
    async def listen(ws: WebSocket) -> None:
        # The native protocol and Deepgram's share this path (the Deepgram SDK builds it): a
        # connection whose query carries Deepgram's parameters speaks Deepgram.
        if speaks_deepgram(ws.query_params):
            await serve(ws, gateway(), DeepgramAdapter, offered_subprotocol(ws.headers, "token"))
        else:
            await serve(ws, gateway(), NativeAdapter)

    @app.websocket("/ws")
    async def listen_alias(ws: WebSocket) -> None:
        await serve(ws, gateway(), NativeAdapter)

    @app.websocket("/deepgram/v1/listen")
    async def deepgram(ws: WebSocket) -> None:
        await serve(ws, gateway(), DeepgramAdapter, offered_subprotocol(ws.headers, "token"))

    @app.websocket("/v2/listen")
    async def flux(ws: WebSocket) -> None:
        await serve(ws, gateway(), FluxAdapter, offered_subprotocol(ws.headers, "token"))

    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket) -> None:
        await serve(ws, gateway(), OpenAIAdapter, offered_subprotocol(ws.headers, "realtime"))

    async def not_ready() -> str | None:
        state = gateway()
        if state.watchdog is not None and state.watchdog.failed:
            return state.watchdog.failed
        if state.draining.requested:
            return "draining"
        try:
            await state.redis.ping()
        except (RedisError, OSError):
            return "Redis does not answer"
        if not state.decoders:
            return "no live decoder"
        return None

    @app.get("/ready")
    async def ready() -> Response:
        if (reason := await not_ready()) is not None:
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return JSONResponse({"ready": True, "decoders": len(gateway().decoders)})

    @app.get("/health")
    async def health() -> Response:
        # Liveness: the event loop answers and no task it needs has died (Redis and decoders
        # are /ready's business: restarting a gateway fixes neither).
        state = gateway()
        if state.watchdog is not None and state.watchdog.failed:
            return JSONResponse({"alive": False, "reason": state.watchdog.failed}, status_code=503)
        return JSONResponse({"alive": True})

    @app.get("/status")
    async def status(request: Request) -> Response:
        if (refused := unauthorized(request, operators=True)) is not None:
            return refused
        state = gateway()
        body: dict[str, Any] = {
            "gateway": state.id,
            "sessions": len(state.router.sessions),
            "files": [f.progress() for f in state.router.files.values()],
            "connections": state.connections,
            "uptime_s": round(time.time() - state.started, 1),
            "decoders": [
                {k: d.get(k) for k in ("id", "model", "device", "compute_type", "jobs_done")} for d in state.decoders
            ],
        }
        try:
            streams = {"final": keys.STREAM_FINAL, "interim": keys.STREAM_INTERIM, "batch": keys.STREAM_BATCH}
            found = await queues.depths(state.redis, list(streams.values()), keys.GROUP)
            body["queues"] = {name: found[stream] for name, stream in streams.items()}
        except (RedisError, OSError):
            body["queues"] = None
        return JSONResponse(body)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        if (refused := unauthorized(request)) is not None:
            return refused
        state = gateway()
        caller = state.keys.identify(request.headers, request.query_params) or ANONYMOUS
        holder = uuid.uuid4().hex
        try:
            await state.limits.open_file(caller, holder)
        except LimitRefused as exc:
            return JSONResponse(
                {"error": {"message": exc.message, "type": "rate_limit_error", "param": None, "code": exc.code}},
                status_code=429,
                headers={"Retry-After": str(exc.retry_after_s)},
            )

        audio = [0.0]
        started = time.time()

        def used(seconds: float) -> None:
            audio[0] = seconds
            state.meter.count(caller, "files")
            state.meter.count(caller, "audio_seconds", seconds)

        status = 500
        try:
            response = await transcribe_upload(request, state, used)
            status = response.status_code
            return response
        finally:
            await state.limits.close_file(caller, holder)
            state.audit.record(
                "file",
                started,
                time.time(),
                tenant=caller.name or None,
                protocol="openai-files",
                id=request.headers.get("x-request-id") or holder,
                audio_seconds=round(audio[0], 3),
                ended="ok" if status == 200 else "http %d" % status,
                client=request.client.host if request.client else None,
            )

    @app.get("/v1/usage")
    async def usage(request: Request) -> Response:
        return await usage_response(request, gateway(), time.time())

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if (refused := unauthorized(request, operators=True)) is not None:
            return refused
        state = gateway()
        state.metrics.sessions.set(len(state.router.sessions))
        state.metrics.ready.set(0 if await not_ready() else 1)
        state.metrics.live_decoders.set(len(state.decoders))
        state.metrics.file_parts_waiting.set(sum(len(f.parts) - len(f.results) for f in state.router.files.values()))
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # The live transcription page and its scripts: files of this package, no build step.
    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
