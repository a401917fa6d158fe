"""One WebSocket connection, whatever protocol it speaks: the part every protocol shares.

`serve` checks the API key (HTTP 401 before the upgrade), accepts, and hands the connection to
a `ConnectionHandler`, which admits it (1013 when the cluster cannot take more), reads the
client's messages and hands them to the connection's protocol adapter (gateway/protocols/); the
adapter calls back for what a session does: open, resume, audio, finalize, drain. Limits,
timeouts and bad input are handled here, the same for every protocol; only their wording is the
adapter's. Each session has a driver (gateway/transport/driver.py) that does its I/O and
handles its failures.

What one client may cost the others is bounded: its audio beyond real time (a short burst
aside) and its outstanding finals make the gateway stop reading its socket for a while (see
gateway/transport/limits.py); a client that does not read is closed (connection.py);
connections count against MAX_SESSIONS from the moment they are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from fastapi import WebSocket
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocketState

from common.protocol import (
    CLOSE_BAD_REQUEST,
    CLOSE_INTERNAL,
    CLOSE_LIMIT,
    CLOSE_NORMAL,
    CLOSE_OVERLOADED,
    CLOSE_POLICY,
    CLOSE_RESTART,
    CLOSE_TAKEN_OVER,
    CLOSE_TOO_BIG,
)
from gateway.core.options import BadInput
from gateway.protocols.base import Adapter, Host
from gateway.transport.admission import refusal
from gateway.transport.connection import Connection
from gateway.transport.driver import FENCED
from gateway.transport.host import SessionHost
from gateway.transport.process import GatewayState
from gateway.transport.tenant_limits import LimitRefused

logger = logging.getLogger(__name__)


async def serve(
    ws: WebSocket, state: GatewayState, adapter: Callable[[Host], Adapter], subprotocol: str | None = None
) -> None:
    """Serve one connection speaking the protocol of `adapter` (accepted with `subprotocol`)."""
    caller = state.keys.identify(ws.headers, ws.query_params)
    if caller is None:
        await ws.send_denial_response(
            PlainTextResponse("missing or wrong API key", status_code=401, headers={"WWW-Authenticate": "Bearer"})
        )
        state.metrics.errors.labels("unauthorized").inc()
        return
    state.connections += 1
    try:
        await ws.accept(subprotocol=subprotocol)
        conn = Connection(ws, state.metrics, state.settings.SEND_TIMEOUT_S)
        await ConnectionHandler(ws, state, conn, adapter, caller).serve()
    finally:
        state.connections -= 1


class ConnectionHandler(SessionHost):
    """One accepted connection: its adapter, its sessions (one per audio channel), its limits."""

    async def serve(self) -> None:
        conn = self.conn
        try:
            why = await refusal(self.state)
            if why:
                message = "the service is at capacity (%s); try again shortly" % why
                self.send(self.adapter.error("overloaded", message), error="overloaded")
                self.close(CLOSE_OVERLOADED)
            elif await self._guard(self._open()):
                await self._loop()
        except Exception as exc:
            self._failed(exc)
        finally:
            if any(s.broken == FENCED for s in self.sessions) or conn.fenced:
                self._taken_over()
            await self._leave()
            await conn.finish()
            code = CLOSE_TAKEN_OVER if conn.fenced else CLOSE_NORMAL
            if self.ws.client_state is WebSocketState.CONNECTED and (conn.fenced or not conn.gone.is_set()):
                with contextlib.suppress(RuntimeError, OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(self.ws.close(code), self.settings.SEND_TIMEOUT_S)

    async def _out_of_quota(self, refused: LimitRefused) -> None:
        """The tenant's audio for today ran out mid-stream: what was accepted is decoded and its
        finals sent, then the error, then close (nothing to resume)."""
        logger.info("session %s: %s", self._ids(), refused.message)
        self.finished = True
        await self.drain()
        self.send(self.adapter.error(refused.code, refused.message), error=refused.code)
        self.close(CLOSE_LIMIT)

    def _failed(self, exc: BaseException) -> None:
        """The connection's handling failed: each session's driver says what that means for it
        (taken over, or its owed finals as errors); without a session, the client is told."""
        if not self.sessions:
            logger.error("connection failed before its session started", exc_info=exc)
            self.send(self.adapter.error("internal", "internal error; please reconnect"), error="internal")
            self.close(CLOSE_INTERNAL)
            return
        for session in self.sessions:
            session.fail(exc)

    def _taken_over(self) -> None:
        """The session was resumed on another connection: this one closes, saying nothing more."""
        logger.info("session %s was resumed elsewhere; closing this connection", self._ids())
        for session in self.sessions:
            session.core.broken = FENCED
        self.conn.fenced = True
        self.conn.gone.set()

    def _audit(self, session_id: str, ended: str) -> None:
        audio, finals = self.usage.get(session_id, [0.0, 0])
        client = self.ws.client
        self.state.audit.record(
            "session",
            self.opened_at,
            time.time(),
            tenant=self.caller.name or None,
            protocol=self.adapter.name,
            id=session_id,
            audio_seconds=round(audio, 3),
            finals=int(finals),
            ended=ended,
            client=client.host if client else None,
        )

    async def _leave(self) -> None:
        """The connection ends. A resumable session that did not end keeps everything (state,
        audio, pending finals) for a resume, anywhere; one taken over elsewhere is left alone."""
        for session in self.sessions:
            self.state.router.remove(session)
            if self.conn.fenced or session.broken == FENCED:
                # Its slot is the resuming connection's now (the same holder): not given back.
                await self.state.limits.close_session(self.caller, session.id, keep=True)
                self._audit(session.id, "taken_over")
                continue
            keep = self.resumable and not self.finished
            try:
                await session.leave(keep=keep, finished=self.finished)
            except Exception as exc:  # its state stays as last recorded; the TTL ends it
                logger.warning("session %s: could not be left cleanly: %s", session.id, exc)
            await self.state.limits.close_session(self.caller, session.id, keep=keep)
            ended = "ended" if self.finished else "disconnected" if keep else "closed"
            self._audit(session.id, self.over_quota.code if self.over_quota else ended)

    async def _open(self) -> bool:
        await self.adapter.on_open()
        return True

    async def _guard(self, step: Any) -> bool:
        """Run an adapter step; bad input in it is answered (and, when fatal, closes with 4400).
        Whether the connection goes on."""
        try:
            return bool(await step)
        except BadInput as exc:
            self.send(self.adapter.error(exc.code, exc.message), error=exc.code)
            if exc.fatal:
                self.close(exc.close or CLOSE_BAD_REQUEST)
                return False
            return True

    async def _receive(self, timeout: float) -> dict[str, Any] | None:
        """The next client message; None on timeout, or when the client cannot be written to."""
        receiving = asyncio.ensure_future(self.ws.receive())
        gone = asyncio.ensure_future(self.conn.gone.wait())
        draining = asyncio.ensure_future(self.state.draining.wait())
        try:
            done, _ = await asyncio.wait(
                {receiving, gone, draining}, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for fut in (receiving, gone, draining):
                if not fut.done():
                    fut.cancel()
        if receiving in done:
            return cast(dict[str, Any], receiving.result())
        return None

    async def _loop(self) -> None:
        settings, adapter = self.settings, self.adapter
        opened = last_input = time.monotonic()
        while not self.conn.gone.is_set() and not any(s.broken for s in self.sessions):
            now = time.monotonic()
            waiting_for_start = adapter.start_required and not self.sessions
            idle_limit = settings.START_TIMEOUT_S if waiting_for_start else adapter.idle_timeout_s()
            idle_left = idle_limit - (now - last_input)
            life_left = settings.MAX_SESSION_S - (now - opened)
            if waiting_for_start and (idle_left <= 0 or life_left <= 0):
                message = "no start message within %.0fs" % settings.START_TIMEOUT_S
                self.send(adapter.error("start_timeout", message), error="start_timeout")
                self.close(CLOSE_POLICY)
                return
            if life_left <= 0:
                await adapter.on_timeout("session_too_long", "sessions last at most %.0fs" % settings.MAX_SESSION_S)
                return
            if idle_left <= 0:
                await adapter.on_timeout("idle_timeout", "no audio or keepalive for %.0fs" % idle_limit)
                return
            if self.state.draining.requested and self.resumable and not self.finished:
                # A rolling deploy: the client resumes elsewhere now, with nothing lost.
                message = "this gateway is stopping; resume the session on another one"
                self.send({"type": "reconnect", "message": message})
                self.close(CLOSE_RESTART, "gateway stopping")
                return
            msg = await self._receive(min(idle_left, life_left))
            if msg is None:
                continue
            if msg["type"] == "websocket.disconnect":
                return
            data, text = msg.get("bytes"), msg.get("text")
            size = len(data) if data is not None else len(text or "")
            if size > settings.MAX_FRAME_BYTES:
                message = "message of %d bytes exceeds the limit of %d" % (size, settings.MAX_FRAME_BYTES)
                self.send(adapter.error("frame_too_large", message), error="frame_too_large")
                self.close(CLOSE_TOO_BIG)
                return
            step = adapter.on_binary(data) if data is not None else adapter.on_text(text or "")
            if not await self._guard(step):
                return
            if self.over_quota is not None:
                await self._out_of_quota(self.over_quota)
                return
            # Time spent waiting for a throttled client's turn is not idleness.
            last_input = time.monotonic()
