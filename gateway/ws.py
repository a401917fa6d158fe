"""The client protocol on one WebSocket connection (DESIGN.md, Client protocol).

Bad input gets an `error` and the session goes on where it can; where it cannot (unsupported
sample rate, oversize frame, overloaded, no start in time) the error is followed by the
contract's close code. A caller without a valid API key is refused before the upgrade (HTTP
401). Every server message carries `seq` 0, 1, 2, … in the order it is sent.

What one client may cost the others is bounded: its audio beyond real time (a short burst
aside) and its outstanding finals make the gateway stop reading its socket for a while (see
gateway/limits.py); a client that does not read is closed (gateway/connection.py); connections
count against MAX_SESSIONS from the moment they are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

from fastapi import WebSocket
from redis.exceptions import RedisError
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from common.messages import ProtocolError, parse_client_text, server_done, server_error, server_started
from common.settings import Settings
from gateway.connection import (
    CLOSE_BAD_REQUEST,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_OVERLOADED,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    Connection,
)
from gateway.limits import FINALIZE_BURST, FINALIZE_RATE, TokenBucket
from gateway.session import Session
from gateway.state import GatewayState

logger = logging.getLogger(__name__)

MIN_RATE, MAX_RATE = 8000, 96000
# A client held back (for sending too fast) longer than this in all is refused: it is not streaming
# in real time, and it is taking time from the others.
MAX_HELD_S = 10.0
# After `done`, how long the client may take to close first. Clients written for the seed read
# until a 3 s silence and do not expect the server to close under them.
DONE_LINGER_S = 5.0


@dataclass
class Budgets:
    audio: TokenBucket
    finalize: TokenBucket
    held_s: float = 0.0  # how long this client was held back for sending too fast, in all


async def serve_session(ws: WebSocket, state: GatewayState) -> None:
    settings = state.settings
    if not state.keys.accepts(ws.headers, ws.query_params):
        await ws.send_denial_response(
            PlainTextResponse("missing or wrong API key", status_code=401, headers={"WWW-Authenticate": "Bearer"})
        )
        state.metrics.errors.labels("unauthorized").inc()
        return
    state.connections += 1
    try:
        await ws.accept()
        conn = Connection(ws, state.metrics, settings.SEND_TIMEOUT_S)
        session: Session | None = None
        live: list[Session] = []  # the session, once started (for the error paths)
        try:
            if await _refused(state, conn):
                return
            session = await _run(ws, state, conn, live)
        except (RedisError, OSError) as exc:
            session = live[0] if live else None
            logger.error("session %s: Redis failed: %s", session.id if session else "-", exc)
            _give_up(conn, session, "the service lost its queue")
        except Exception as exc:
            # A bug in one session's handling ends that session, with what it owes as errors.
            session = live[0] if live else None
            logger.exception("session %s: failed", session.id if session else "-")
            _give_up(conn, session, "internal error: %s" % type(exc).__name__)
        finally:
            if session is not None:
                state.router.remove(session)
                with contextlib.suppress(RedisError, OSError):
                    await session.cleanup()
            await conn.finish()
            if ws.client_state is WebSocketState.CONNECTED and not conn.gone.is_set():
                with contextlib.suppress(RuntimeError, OSError):
                    await asyncio.wait_for(ws.close(CLOSE_NORMAL), settings.SEND_TIMEOUT_S)
    finally:
        state.connections -= 1


def _give_up(conn: Connection, session: Session | None, why: str) -> None:
    """End the connection on a failure: a session's owed finals become errors first."""
    if session is not None:
        session.abandon(why)
    else:
        conn.send(server_error("internal", "%s; please reconnect" % why))
        conn.close_when_sent(CLOSE_INTERNAL)


async def _refused(state: GatewayState, conn: Connection) -> bool:
    """Refuse a new connection at once (1013) when the cluster cannot take more work."""
    settings = state.settings
    why = ""
    if state.connections > settings.MAX_SESSIONS:
        why = "this gateway has %d connections, its limit" % settings.MAX_SESSIONS
    elif not state.decoders:
        why = "no decoder is running"
    else:
        try:
            if await state.queue.final_backlog() >= settings.MAX_FINAL_BACKLOG:
                why = "the decoders are %d finals behind" % settings.MAX_FINAL_BACKLOG
        except (RedisError, OSError):
            why = "the service cannot reach its queue"
    if not why:
        return False
    conn.send(server_error("overloaded", "the service is at capacity (%s); try again shortly" % why))
    conn.close_when_sent(CLOSE_OVERLOADED)
    return True


async def _receive(ws: WebSocket, conn: Connection, timeout: float) -> dict[str, Any] | None:
    """The next client message; None on timeout, or when the client cannot be written to."""
    receiving = asyncio.ensure_future(ws.receive())
    gone = asyncio.ensure_future(conn.gone.wait())
    try:
        done, _ = await asyncio.wait({receiving, gone}, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in (receiving, gone):
            if not fut.done():
                fut.cancel()
    if receiving in done:
        message = cast(dict[str, Any], receiving.result())
        return message
    return None


def _end_error(settings: Settings, idle_left: float, life_left: float, started: bool) -> dict[str, Any]:
    if not started:
        return server_error("start_timeout", "no start message within %.0fs" % settings.START_TIMEOUT_S)
    if life_left <= 0:
        return server_error("session_too_long", "sessions last at most %.0fs" % settings.MAX_SESSION_S)
    return server_error("idle_timeout", "no audio or keepalive for %.0fs" % settings.IDLE_TIMEOUT_S)


async def _run(ws: WebSocket, state: GatewayState, conn: Connection, live: list[Session]) -> Session | None:
    settings = state.settings
    session: Session | None = None
    budget = Budgets(
        TokenBucket(settings.AUDIO_BURST_S, settings.AUDIO_RATE_MAX), TokenBucket(FINALIZE_BURST, FINALIZE_RATE)
    )
    opened = last_input = time.monotonic()
    while not conn.gone.is_set() and not (session is not None and session.broken):
        now = time.monotonic()
        idle_limit = settings.IDLE_TIMEOUT_S if session is not None else settings.START_TIMEOUT_S
        idle_left = idle_limit - (now - last_input)
        life_left = settings.MAX_SESSION_S - (now - opened)
        if idle_left <= 0 or life_left <= 0:
            conn.send(_end_error(settings, idle_left, life_left, session is not None))
            if session is not None:
                await _drain(session, conn, settings)
            conn.close_when_sent(CLOSE_NORMAL if session is not None else CLOSE_POLICY)
            return session
        msg = await _receive(ws, conn, min(idle_left, life_left))
        if msg is None:
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
        if data is not None:
            if not await _audio(session, data, conn, state, budget):
                return session
        else:
            session, finished = await _command(ws, state, conn, session, text or "", budget)
            if session is not None and not live:
                live.append(session)
            if finished:
                return session
        # Time spent waiting for a throttled client's turn is not idleness.
        last_input = time.monotonic()
    return session


async def _command(
    ws: WebSocket, state: GatewayState, conn: Connection, session: Session | None, text: str, budget: Budgets
) -> tuple[Session | None, bool]:
    """Act on one text message: the session (new after a good `start`), and whether the
    connection is done (after `stop`, or a start that cannot be served)."""
    settings = state.settings
    try:
        cmd = parse_client_text(text)
    except ProtocolError as exc:
        conn.send(server_error(exc.code, exc.message))
        return session, False
    if cmd.op == "start":
        if session is not None:
            conn.send(server_error("already_started", "the session has already started"))
            return session, False
        assert cmd.start is not None
        rate = cmd.start.sample_rate
        if not MIN_RATE <= rate <= MAX_RATE:
            conn.send(
                server_error(
                    "bad_sample_rate", "sample_rate %d is not supported (%d-%d Hz)" % (rate, MIN_RATE, MAX_RATE)
                )
            )
            conn.close_when_sent(CLOSE_BAD_REQUEST)
            return None, True
        if cmd.start.lang not in (None, "en") and state.english_only:
            conn.send(
                server_error(
                    "unsupported_language",
                    "this service's model is English-only; lang %r cannot be served" % cmd.start.lang,
                )
            )
            conn.close_when_sent(CLOSE_BAD_REQUEST)
            return None, True
        session = Session(settings, cmd.start, state.queue, state.id, conn.send, state.metrics, conn.close_when_sent)
        state.router.add(session)
        logger.info("session %s started (%d Hz, lang %s)", session.id, rate, cmd.start.lang or "auto")
        conn.send(server_started(session.id, rate, cmd.start.lang))
    elif cmd.op == "audio":
        if not await _audio(session, cmd.audio, conn, state, budget):
            return session, True
    elif session is None:
        if cmd.op != "keepalive":
            conn.send(server_error("not_started", "send a start message first"))
    elif cmd.op == "finalize":
        await session.finalize()
        if not await _hold(state, conn, session, budget, budget.finalize.spend(1), "finalize"):
            return session, True
    elif cmd.op == "stop":
        await _drain(session, conn, settings)
        await _await_client_close(ws, DONE_LINGER_S)
        conn.close_when_sent(CLOSE_NORMAL)
        return session, True
    return session, False


async def _audio(session: Session | None, data: bytes, conn: Connection, state: GatewayState, budget: Budgets) -> bool:
    """Take one chunk of audio; False when the client is refused for sending too fast."""
    if session is None:
        conn.send(server_error("not_started", "audio before start; send a start message first"))
        return True
    if len(data) % 2:
        conn.send(server_error("odd_bytes", "audio of %d bytes is not whole 16-bit samples; frame dropped" % len(data)))
        return True
    seconds = len(data) / 2 / session.start_req.sample_rate
    state.metrics.audio_seconds.inc(seconds)
    await session.on_audio(data)
    return await _hold(state, conn, session, budget, budget.audio.spend(seconds), "audio")


async def _hold(
    state: GatewayState, conn: Connection, session: Session, budget: Budgets, wait: float, what: str
) -> bool:
    """Read no more from this client for `wait` seconds (it sent faster than allowed: its socket
    fills, TCP slows it down), and while too many of its finals are outstanding. A client held
    back for more than MAX_HELD_S in all is refused: it is not a real-time stream. False then."""
    settings = state.settings
    if wait > 0:
        if budget.held_s + wait > MAX_HELD_S:
            limit = (
                "%.1fx real time beyond a %.0f s burst" % (settings.AUDIO_RATE_MAX, settings.AUDIO_BURST_S)
                if what == "audio"
                else "%.0f finalize a second beyond a burst of %.0f" % (FINALIZE_RATE, FINALIZE_BURST)
            )
            conn.send(
                server_error(
                    "too_fast", "%s arrives faster than this service takes it (%s); stream in real time" % (what, limit)
                )
            )
            conn.close_when_sent(CLOSE_POLICY)
            return False
        budget.held_s += wait
        state.metrics.throttled_seconds.inc(wait)
        await asyncio.sleep(wait)
    await session.wait_for_room()
    return True


async def _await_client_close(ws: WebSocket, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with contextlib.suppress(asyncio.TimeoutError, WebSocketDisconnect, RuntimeError):
        while (left := deadline - time.monotonic()) > 0:
            msg = await asyncio.wait_for(ws.receive(), left)
            if msg["type"] == "websocket.disconnect":
                return


async def _drain(session: Session, conn: Connection, settings: Settings) -> None:
    """`stop`: finalize what is held, send every remaining final (or its error), then done."""
    await session.finalize()
    # Each pending final resolves by itself: a result, or an error after MAX_DELIVERIES re-queues.
    limit = settings.FINAL_TIMEOUT_S * (settings.MAX_DELIVERIES + 1) + 5
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(session.finals_done.wait(), limit)
    if session.finals_outstanding:
        # `done` promises that every utterance has its final or its error: these get an error.
        n = session.fail_outstanding("no result within %.0fs" % limit)
        logger.error("session %s: %d finals never resolved; sent as errors", session.id, n)
    conn.send(server_done())
