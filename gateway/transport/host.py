"""What a protocol adapter may ask of its connection (the `Host` of gateway/protocols/base.py):
open or resume its session(s), pass audio and `finalize` on with the limits every protocol
shares, drain, send and close."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import WebSocket
from starlette.datastructures import QueryParams
from starlette.websockets import WebSocketDisconnect

from common.protocol import CLOSE_INTERNAL, CLOSE_LIMIT, CLOSE_POLICY, RESUMABLE_CLOSES
from gateway.core.events import Event, Final, SessionFailed
from gateway.core.options import BadInput, SessionOptions
from gateway.core.session import Session
from gateway.errors import ResumeRefused
from gateway.protocols.base import Adapter, Host
from gateway.transport.connection import Connection
from gateway.transport.driver import SessionDriver
from gateway.transport.keyring import ANONYMOUS, Caller
from gateway.transport.limits import Budgets
from gateway.transport.process import GatewayState
from gateway.transport.takeover import make_resumable, take_over
from gateway.transport.tenant_limits import LimitRefused

logger = logging.getLogger(__name__)

# After the last message, how long the client may take to close first. Clients written for the
# seed read until a 3 s silence and do not expect the server to close under them.
DONE_LINGER_S = 5.0


class SessionHost:
    """A connection's side of what its adapter asks; the adapter itself is made here, with this
    as its `Host`."""

    def __init__(
        self,
        ws: WebSocket,
        state: GatewayState,
        conn: Connection,
        adapter: Callable[[Host], Adapter],
        caller: Caller = ANONYMOUS,
    ) -> None:
        self.ws = ws
        self.caller = caller  # whose key opened it (its tenant's limits apply)
        self.opened_at = time.time()
        self.usage: dict[str, list[float]] = {}  # session id -> [audio seconds, finals] here (the audit)
        self.over_quota: LimitRefused | None = None  # its tenant's day of audio ran out while it streamed
        self.state = state
        self.conn = conn
        self.settings = state.settings
        self.headers: Mapping[str, str] = ws.headers
        self.query: QueryParams = ws.query_params
        self.sessions: list[SessionDriver] = []
        self.resumable = False  # its session can be resumed after the connection breaks
        self.finished = False  # the session ended (the client was told so): nothing to resume
        self.budget = Budgets.of(self.settings)
        self.adapter = adapter(self)
        conn.stamp = self.adapter.stamp

    def _on_event(self, channel: int, event: Event) -> None:
        self.adapter.on_event(channel, event)
        if isinstance(event, Final):
            self.state.meter.count(self.caller, "finals")
            if channel < len(self.sessions):
                self.usage.setdefault(self.sessions[channel].id, [0.0, 0])[1] += 1
        if isinstance(event, SessionFailed):
            self.close(CLOSE_INTERNAL)

    def _ids(self) -> str:
        return ",".join(s.id for s in self.sessions) or "-"

    @property
    def model_name(self) -> str:
        return next((d["model"] for d in self.state.decoders if d.get("model")), "whisper")

    @property
    def english_only(self) -> bool:
        return self.state.english_only

    @property
    def turn_model(self) -> bool:
        return self.state.turn_model

    def send(self, msg: dict[str, Any], error: str = "") -> None:
        self.conn.send(msg, error)

    def close(self, code: int, reason: str = "") -> None:
        if code not in RESUMABLE_CLOSES:
            # A close the client may not resume from (refused, bad input, failed): its session
            # ends here, and what it still owed is dropped, not decoded for no one.
            self.finished = True
        self.conn.close_when_sent(code, reason)

    def _driver(self, session: Session, channel: int, token: str = "") -> SessionDriver:
        emit = functools.partial(self._on_event, channel)
        driver = SessionDriver(session, self.state.queue, self.conn, emit, token)
        self.sessions.append(driver)
        self.state.router.add(driver)
        return driver

    async def open(self, options: SessionOptions, channels: int = 1, resumable: bool = False) -> list[SessionDriver]:
        state = self.state
        if options.diarize and not state.speakers:
            raise BadInput(
                "diarize_unavailable",
                "speaker labels are not served here: no live decoder has the speaker encoder "
                "(python -m stt.turnfile fetches it)",
            )
        if options.eot is not None and not state.turn_model:
            state.warn_no_turn_model()
            options.eot = None
        for channel in range(channels):
            # Each channel's session may change its own options (its rate, its turn rules).
            own = SessionOptions(**vars(options)) if channels > 1 else options
            session = Session(self.settings, own, state.id, state.metrics)
            await self._limited(state.limits.open_session(self.caller, session.id))
            state.meter.count(self.caller, "sessions")
            token = ""
            if resumable and self.settings.RESUME_TTL_S:
                ttl = int(self.settings.RESUME_TTL_S)
                token = await make_resumable(session, self.conn, state.queue.writes, state.id, ttl)
                self.resumable = True
            self._driver(session, channel, token)
            logger.info(
                "session %s started (%s, %d Hz, lang %s%s)",
                session.id,
                self.adapter.name,
                options.sample_rate,
                options.lang or "auto",
                ", channel %d of %d" % (channel, channels) if channels > 1 else "",
            )
        return self.sessions

    async def resume(
        self, session_id: str, token: str, last_seq: int, announce: Callable[[SessionDriver], None]
    ) -> SessionDriver | None:
        """Take the session over (ResumeRefused: refused) and queue what its client missed; None
        when it had already ended (the client only needed the end of it). `announce(driver)`
        comes before its first step here: a pending final answered at once (the decoders'
        result cache) is then numbered after the adapter's resumed message, not before it."""
        state = self.state
        if not self.settings.RESUME_TTL_S:
            raise ResumeRefused("resume_off", "this service keeps no session for a resume (RESUME_TTL_S=0)")
        try:
            await state.limits.open_session(self.caller, session_id, resumed=True)  # its own slot, kept
        except LimitRefused as exc:
            raise ResumeRefused("rate_limit_exceeded", exc.message) from exc
        try:
            session, effects = await take_over(
                self.conn,
                state.redis,
                state.queue.writes,
                self.settings,
                state.id,
                state.metrics,
                session_id,
                token,
                last_seq,
            )
        except BaseException:
            # Not resumed here: the slot is not this connection's to renew (nor to give back:
            # a connection still holding the session elsewhere keeps it).
            await state.limits.close_session(self.caller, session_id, keep=True)
            raise
        self.resumable = True
        if session is None:
            self.finished = True
            return None
        driver = self._driver(session, 0)
        announce(driver)
        async with driver.lock:
            await driver.run(effects)
        logger.info("session %s resumed here", session.id)
        return driver

    async def _limited(self, taking: Awaitable[None]) -> None:
        """A tenant's slot taken for a new session, or its refusal said as the protocol's error
        (the sessions of this connection that got one give it back when it closes)."""
        try:
            await taking
        except LimitRefused as exc:
            raise BadInput(exc.code, exc.message, fatal=True, close=CLOSE_LIMIT) from exc

    def finish(self) -> None:
        self.finished = True

    async def audio(self, pcm: list[bytes]) -> bool:
        if not self.sessions or not pcm:
            return True
        seconds = len(pcm[0]) / 2 / self.sessions[0].options.sample_rate
        self.state.metrics.audio_seconds.inc(seconds)
        self.state.meter.count(self.caller, "audio_seconds", seconds * len(self.sessions))  # each channel
        for session in self.sessions:
            self.usage.setdefault(session.id, [0.0, 0])[0] += seconds
        tenant = self.caller.tenant
        if tenant is not None and self.over_quota is None and self.state.limits.over_quota(tenant):
            self.over_quota = self.state.limits.refused_mid_stream(tenant)  # the connection ends it
        for session, channel in zip(self.sessions, pcm):
            await session.feed(channel)
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

    async def linger_for_close(self) -> None:
        deadline = time.monotonic() + DONE_LINGER_S
        with contextlib.suppress(asyncio.TimeoutError, WebSocketDisconnect, RuntimeError):
            while (left := deadline - time.monotonic()) > 0:
                msg = await asyncio.wait_for(self.ws.receive(), left)
                if msg["type"] == "websocket.disconnect":
                    return
