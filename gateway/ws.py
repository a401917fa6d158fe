"""The client protocol on one WebSocket connection (DESIGN.md, Client protocol).

Bad input gets an `error` and the session goes on where it can; where it cannot (unsupported
sample rate, oversize frame, unauthorized, overloaded) the error is followed by the contract's
close code. Every server message carries `seq` 0, 1, 2, … in the order it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from fastapi import WebSocket
from redis.exceptions import RedisError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from common.messages import (
    ProtocolError,
    parse_client_text,
    server_done,
    server_error,
    server_started,
)
from gateway.session import Session
from gateway.state import GatewayState

logger = logging.getLogger(__name__)

CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_OVERLOADED = 1000, 1008, 1009, 1011, 1013
CLOSE_BAD_REQUEST, CLOSE_UNAUTHORIZED = 4400, 4401
MIN_RATE, MAX_RATE = 8000, 96000
# After `done`, how long the client may take to close first. Clients written for the seed read
# until a 3 s silence and do not expect the server to close under them.
DONE_LINGER_S = 5.0


class Connection:
    """Outgoing side: one writer task sends queued messages in order, stamping `seq`."""

    def __init__(self, ws: WebSocket, state: GatewayState) -> None:
        self.ws = ws
        self.state = state
        self.outbox: asyncio.Queue[dict[str, Any] | int] = asyncio.Queue()
        self.seq = 0
        self.writer = asyncio.create_task(self._write(), name="ws-writer")

    def send(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "error":
            self.state.metrics.errors.labels(msg.get("code", "")).inc()
        self.outbox.put_nowait(msg)

    def close_when_sent(self, code: int) -> None:
        """Close with `code` once the messages queued before it are sent."""
        self.outbox.put_nowait(code)

    async def _write(self) -> None:
        try:
            while True:
                item = await self.outbox.get()
                if isinstance(item, int):
                    await self.ws.close(item)
                    return
                item["seq"] = self.seq
                self.seq += 1
                await self.ws.send_text(json.dumps(item, separators=(",", ":")))
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client went away; nothing more can reach it

    async def finish(self, timeout: float = 5.0) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.writer), timeout)
        except TimeoutError:
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.writer


def _authorized(ws: WebSocket, api_key: str) -> bool:
    if not api_key:
        return True
    header = ws.headers.get("authorization", "")
    return header == "Bearer %s" % api_key or ws.query_params.get("token") == api_key


async def serve_session(ws: WebSocket, state: GatewayState) -> None:
    settings = state.settings
    await ws.accept()
    conn = Connection(ws, state)
    session: Session | None = None
    try:
        if not _authorized(ws, settings.API_KEY):
            conn.send(server_error("unauthorized", "missing or wrong API key"))
            conn.close_when_sent(CLOSE_UNAUTHORIZED)
            return
        try:
            backlog = await state.queue.final_backlog()
        except (RedisError, OSError):
            backlog = settings.MAX_FINAL_BACKLOG
        if len(state.router.sessions) >= settings.MAX_SESSIONS or backlog >= settings.MAX_FINAL_BACKLOG:
            conn.send(server_error("overloaded", "the service is at capacity; try again shortly"))
            conn.close_when_sent(CLOSE_OVERLOADED)
            return
        session = await _run(ws, state, conn)
    except (RedisError, OSError) as exc:
        logger.error("session %s: Redis failed: %s", session.id if session else "-", exc)
        conn.send(server_error("internal", "the service lost its queue; please reconnect"))
        conn.close_when_sent(CLOSE_INTERNAL)
    finally:
        if session is not None:
            state.router.remove(session)
            with contextlib.suppress(RedisError, OSError):
                await session.cleanup()
        await conn.finish()
        if ws.client_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError):
                await ws.close(CLOSE_NORMAL)


async def _run(ws: WebSocket, state: GatewayState, conn: Connection) -> Session | None:
    settings = state.settings
    session: Session | None = None
    opened = last_input = time.monotonic()
    while True:
        now = time.monotonic()
        idle_left = settings.IDLE_TIMEOUT_S - (now - last_input)
        life_left = settings.MAX_SESSION_S - (now - opened)
        if idle_left <= 0 or life_left <= 0:
            code = "idle_timeout" if idle_left <= 0 else "session_too_long"
            conn.send(
                server_error(
                    code,
                    "no audio or keepalive for %.0fs" % settings.IDLE_TIMEOUT_S
                    if idle_left <= 0
                    else "sessions last at most %.0fs" % settings.MAX_SESSION_S,
                )
            )
            if session is not None:
                await _drain(session, conn, settings)
            conn.close_when_sent(CLOSE_NORMAL)
            return session
        try:
            msg = await asyncio.wait_for(ws.receive(), min(idle_left, life_left))
        except TimeoutError:
            continue
        if msg["type"] == "websocket.disconnect":
            return session
        data, text = msg.get("bytes"), msg.get("text")
        size = len(data) if data is not None else len(text or "")
        if size > settings.MAX_FRAME_BYTES:
            conn.send(
                server_error(
                    "frame_too_large", "message of %d bytes exceeds the limit of %d" % (size, settings.MAX_FRAME_BYTES)
                )
            )
            conn.close_when_sent(CLOSE_TOO_BIG)
            return session
        last_input = time.monotonic()
        if data is not None:
            await _audio(session, data, conn, state)
            continue
        try:
            cmd = parse_client_text(text or "")
        except ProtocolError as exc:
            conn.send(server_error(exc.code, exc.message))
            continue
        if cmd.op == "start":
            if session is not None:
                conn.send(server_error("already_started", "the session has already started"))
                continue
            assert cmd.start is not None
            rate = cmd.start.sample_rate
            if not MIN_RATE <= rate <= MAX_RATE:
                conn.send(
                    server_error(
                        "bad_sample_rate", "sample_rate %d is not supported (%d-%d Hz)" % (rate, MIN_RATE, MAX_RATE)
                    )
                )
                conn.close_when_sent(CLOSE_BAD_REQUEST)
                return session
            session = Session(settings, cmd.start, state.queue, state.id, conn.send, state.metrics)
            state.router.add(session)
            logger.info("session %s started (%d Hz, lang %s)", session.id, rate, cmd.start.lang or "auto")
            conn.send(server_started(session.id, rate, cmd.start.lang))
        elif cmd.op == "audio":
            await _audio(session, cmd.audio, conn, state)
        elif session is None and cmd.op != "keepalive":
            conn.send(server_error("not_started", "send a start message first"))
        elif cmd.op == "finalize" and session is not None:
            await session.finalize()
        elif cmd.op == "stop" and session is not None:
            await _drain(session, conn, settings)
            await _await_client_close(ws, DONE_LINGER_S)
            conn.close_when_sent(CLOSE_NORMAL)
            return session


async def _audio(session: Session | None, data: bytes, conn: Connection, state: GatewayState) -> None:
    if session is None:
        conn.send(server_error("not_started", "audio before start; send a start message first"))
        return
    if len(data) % 2:
        conn.send(server_error("odd_bytes", "audio of %d bytes is not whole 16-bit samples; frame dropped" % len(data)))
        return
    state.metrics.audio_seconds.inc(len(data) / 2 / session.start_req.sample_rate)
    await session.on_audio(data)


async def _await_client_close(ws: WebSocket, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with contextlib.suppress(asyncio.TimeoutError, WebSocketDisconnect, RuntimeError):
        while (left := deadline - time.monotonic()) > 0:
            msg = await asyncio.wait_for(ws.receive(), left)
            if msg["type"] == "websocket.disconnect":
                return


async def _drain(session: Session, conn: Connection, settings: Any) -> None:
    """`stop`: finalize what is held, send every remaining final (or its error), then done."""
    await session.finalize()
    # Each pending final resolves by itself: a result, or an error after MAX_DELIVERIES re-queues.
    limit = settings.FINAL_TIMEOUT_S * (settings.MAX_DELIVERIES + 1) + 5
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(session.finals_done.wait(), limit)
    if session.finals_outstanding:
        logger.error("session %s: %d finals never resolved", session.id, session.finals_outstanding)
    conn.send(server_done())
