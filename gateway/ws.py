"""One WebSocket connection, whatever protocol it speaks: the part every protocol shares.

A `ConnectionHandler` checks the API key (HTTP 401 before the upgrade), admits the connection
(1013 when the cluster cannot take more), reads the client's messages and hands them to the
connection's protocol adapter (gateway/protocols/), which calls back for what a session does:
open, audio, finalize, drain. Limits, timeouts and bad input are handled here, the same for
every protocol; only their wording is the adapter's.

What one client may cost the others is bounded: its audio beyond real time (a short burst
aside) and its outstanding finals make the gateway stop reading its socket for a while (see
gateway/limits.py); a client that does not read is closed (gateway/connection.py); connections
count against MAX_SESSIONS from the moment they are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from fastapi import WebSocket
from redis.exceptions import RedisError
from starlette.datastructures import QueryParams
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from gateway.connection import (
    CLOSE_BAD_REQUEST,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_OVERLOADED,
    CLOSE_POLICY,
    CLOSE_RESTART,
    CLOSE_TAKEN_OVER,
    CLOSE_TOO_BIG,
    Connection,
)
from gateway.events import Event, SessionFailed
from gateway.limits import Budgets
from gateway.options import BadInput, SessionOptions
from gateway.protocols.base import Adapter, Host
from gateway.resume import Fenced, ResumeRefused
from gateway.session import FENCED, Session
from gateway.state import GatewayState
from gateway.takeover import make_resumable, resume_on

logger = logging.getLogger(__name__)

# After the last message, how long the client may take to close first. Clients written for the
# seed read until a 3 s silence and do not expect the server to close under them.
DONE_LINGER_S = 5.0


async def serve(
    ws: WebSocket, state: GatewayState, adapter: Callable[[Host], Adapter], subprotocol: str | None = None
) -> None:
    """Serve one connection speaking the protocol of `adapter` (accepted with `subprotocol`)."""
    await ConnectionHandler(ws, state, adapter).serve(subprotocol)


class ConnectionHandler:
    """One connection: its adapter, its session(s) (one per audio channel), its limits. It is
    the adapter's `Host`."""

    def __init__(self, ws: WebSocket, state: GatewayState, adapter: Callable[[Host], Adapter]) -> None:
        self.ws = ws
        self.state = state
        self.settings = state.settings
        self.headers: Mapping[str, str] = ws.headers
        self.query: QueryParams = ws.query_params
        self.sessions: list[Session] = []
        self.resumable = False  # its session can be resumed after the connection breaks
        self.finished = False  # the session ended (the client was told so): nothing to resume
        self.adapter = adapter(self)
        self.conn: Connection | None = None
        self.budget = Budgets.of(self.settings)

    async def serve(self, subprotocol: str | None) -> None:
        ws, state = self.ws, self.state
        if not state.keys.accepts(ws.headers, ws.query_params):
            await ws.send_denial_response(
                PlainTextResponse("missing or wrong API key", status_code=401, headers={"WWW-Authenticate": "Bearer"})
            )
            state.metrics.errors.labels("unauthorized").inc()
            return
        state.connections += 1
        try:
            await ws.accept(subprotocol=subprotocol)
            self.conn = Connection(ws, state.metrics, self.settings.SEND_TIMEOUT_S, self.adapter.stamp)
            try:
                if await self._refused():
                    return
                if await self._guard(self._open()):
                    await self._loop()
                if any(session.broken == FENCED for session in self.sessions):
                    self._taken_over()
            except Fenced:
                self._taken_over()
            except (RedisError, OSError) as exc:
                logger.error("session %s: Redis failed: %s", self._ids(), exc)
                self._give_up("the service lost its queue")
            except Exception as exc:
                # A bug in one connection's handling ends that connection, with what it owes as errors.
                logger.exception("session %s: failed", self._ids())
                self._give_up("internal error: %s" % type(exc).__name__)
            finally:
                await self._leave()
                await self.conn.finish()
                code = CLOSE_TAKEN_OVER if self.conn.fenced else CLOSE_NORMAL
                if ws.client_state is WebSocketState.CONNECTED and (self.conn.fenced or not self.conn.gone.is_set()):
                    with contextlib.suppress(RuntimeError, OSError, asyncio.TimeoutError):
                        await asyncio.wait_for(ws.close(code), self.settings.SEND_TIMEOUT_S)
        finally:
            state.connections -= 1

    def _taken_over(self) -> None:
        """The session was resumed on another connection: this one closes, saying nothing more."""
        assert self.conn is not None
        logger.info("session %s was resumed elsewhere; closing this connection", self._ids())
        for session in self.sessions:
            session.broken = FENCED
        self.conn.fenced = True
        self.conn.gone.set()

    async def _leave(self) -> None:
        """The connection ends. A resumable session that did not end keeps everything (state,
        audio, pending finals) for a resume, anywhere; one taken over elsewhere is left alone."""
        assert self.conn is not None
        for session in self.sessions:
            self.state.router.remove(session)
            if self.conn.fenced or session.broken == FENCED:
                continue
            with contextlib.suppress(RedisError, OSError, Fenced):
                if self.resumable and not self.finished:
                    await session.record(connected="0", lease="0")
                    continue
                if self.resumable:
                    await session.record(connected="0", lease="0", finished="1")
                await session.cleanup()

    def _ids(self) -> str:
        return ",".join(s.id for s in self.sessions) or "-"

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
                self.close(CLOSE_BAD_REQUEST)
                return False
            return True

    def _give_up(self, why: str) -> None:
        """End the connection on a failure: its sessions' owed finals become errors first."""
        if self.sessions:
            for session in self.sessions:
                session.abandon(why)
        else:
            self.send(self.adapter.error("internal", "%s; please reconnect" % why), error="internal")
            self.close(CLOSE_INTERNAL)

    async def _refused(self) -> bool:
        """Refuse a new connection at once (1013) when the cluster cannot take more work."""
        settings, state = self.settings, self.state
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
        message = "the service is at capacity (%s); try again shortly" % why
        self.send(self.adapter.error("overloaded", message), error="overloaded")
        self.close(CLOSE_OVERLOADED)
        return True

    async def _receive(self, timeout: float) -> dict[str, Any] | None:
        """The next client message; None on timeout, or when the client cannot be written to."""
        assert self.conn is not None
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
        assert self.conn is not None
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
            # Time spent waiting for a throttled client's turn is not idleness.
            last_input = time.monotonic()

    # --- Host: what the adapter asks for --------------------------------------------------

    @property
    def model_name(self) -> str:
        return next((d["model"] for d in self.state.decoders if d.get("model")), self.settings.MODEL_NAME)

    @property
    def english_only(self) -> bool:
        return self.state.english_only

    def send(self, msg: dict[str, Any], error: str = "") -> None:
        assert self.conn is not None
        self.conn.send(msg, error)

    def close(self, code: int, reason: str = "") -> None:
        assert self.conn is not None
        self.conn.close_when_sent(code, reason)

    def _session(self, options: SessionOptions, channel: int = 0) -> Session:
        state = self.state
        return Session(
            self.settings, options, state.queue, state.id, functools.partial(self._on_event, channel), state.metrics
        )

    async def open(self, options: SessionOptions, channels: int = 1, resumable: bool = False) -> list[Session]:
        state = self.state
        assert self.conn is not None
        for channel in range(channels):
            # Each channel's session may change its own options (its rate, its turn rules).
            session = self._session(SessionOptions(**vars(options)) if channels > 1 else options, channel)
            if resumable and self.settings.RESUME_TTL_S:
                session.resume_token = await make_resumable(
                    session, self.conn, state.queue.writes, state.id, int(self.settings.RESUME_TTL_S)
                )
                self.resumable = True
            self.sessions.append(session)
            state.router.add(session)
            logger.info(
                "session %s started (%s, %d Hz, lang %s%s)",
                session.id,
                self.adapter.name,
                options.sample_rate,
                options.lang or "auto",
                ", channel %d of %d" % (channel, channels) if channels > 1 else "",
            )
        return self.sessions

    async def resume(self, session_id: str, token: str, last_seq: int) -> Session | None:
        """Take the session over (ResumeRefused: refused) and queue what its client missed; None
        when it had already ended (the client only needed the end of it)."""
        state = self.state
        assert self.conn is not None
        if not self.settings.RESUME_TTL_S:
            raise ResumeRefused("resume_off", "this service keeps no session for a resume (RESUME_TTL_S=0)")
        session, _ = await resume_on(
            self.conn,
            self._session,
            state.redis,
            state.queue.writes,
            session_id,
            token,
            last_seq,
            state.id,
            int(self.settings.RESUME_TTL_S),
        )
        self.resumable = True
        if session is None:
            self.finished = True
            return None
        self.sessions.append(session)
        state.router.add(session)
        logger.info("session %s resumed here", session.id)
        return session

    def finish(self) -> None:
        self.finished = True

    def _on_event(self, channel: int, event: Event) -> None:
        self.adapter.on_event(channel, event)
        if isinstance(event, SessionFailed):
            self.close(CLOSE_INTERNAL)

    async def audio(self, pcm: list[bytes]) -> bool:
        if not self.sessions or not pcm:
            return True
        seconds = len(pcm[0]) / 2 / self.sessions[0].options.sample_rate
        self.state.metrics.audio_seconds.inc(seconds)
        for session, channel in zip(self.sessions, pcm):
            await session.on_audio(channel)
        return await self._hold(self.budget.audio.spend(seconds), "audio")

    async def finalize(self) -> int | None:
        ended = 0
        for session in self.sessions:
            ended += await session.finalize()
        if not await self._hold(self.budget.finalize.spend(1), "finalize"):
            return None
        return ended

    async def drain(self) -> None:
        for session in self.sessions:
            await session.finalize()
        # Each pending final resolves by itself: a result, or an error after MAX_DELIVERIES re-queues.
        limit = self.settings.FINAL_TIMEOUT_S * (self.settings.MAX_DELIVERIES + 1) + 5
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.finals_done.wait() for s in self.sessions)), limit)
        for session in self.sessions:
            if session.finals_outstanding:
                # The end promises every utterance its final or its error: these get an error.
                n = session.fail_outstanding("no result within %.0fs" % limit)
                logger.error("session %s: %d finals never resolved; sent as errors", session.id, n)

    async def linger_for_close(self) -> None:
        deadline = time.monotonic() + DONE_LINGER_S
        with contextlib.suppress(asyncio.TimeoutError, WebSocketDisconnect, RuntimeError):
            while (left := deadline - time.monotonic()) > 0:
                msg = await asyncio.wait_for(self.ws.receive(), left)
                if msg["type"] == "websocket.disconnect":
                    return

    async def _hold(self, wait: float, what: str) -> bool:
        """Read no more from this client for `wait` seconds (it sent faster than allowed: its socket
        fills, TCP slows it down), and while too many of its finals are outstanding. A client held
        back for more than MAX_HELD_S in all is refused: it is not a real-time stream. False then."""
        if wait > 0:
            refusal = self.budget.over(wait, what, self.settings)
            if refusal:
                self.send(self.adapter.error("too_fast", refusal), error="too_fast")
                self.close(CLOSE_POLICY)
                return False
            self.state.metrics.throttled_seconds.inc(wait)
            await asyncio.sleep(wait)
        for session in self.sessions:
            await session.wait_for_room()
        return True
