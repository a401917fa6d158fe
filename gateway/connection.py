"""The outgoing side of one WebSocket: messages in order, each stamped by its protocol (the
native `seq`, OpenAI's `event_id`), and a client that stops reading cannot make the gateway hold
more than a bounded amount for it.

One writer task sends queued messages. A client that does not read fills the socket's buffers
first, then the writer waits; if it waits longer than SEND_TIMEOUT_S, or MAX_OUTBOX messages pile
up behind it, the connection is given up: the session ends, its close frame (1008) is queued,
and the server drops the socket (see gateway/server.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from common.lifecycle import REDIS_TRANSIENT
from gateway.metrics import GatewayMetrics
from gateway.resume import Fenced, Journal

logger = logging.getLogger(__name__)

CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_OVERLOADED = 1000, 1008, 1009, 1011, 1013
CLOSE_BAD_REQUEST = 4400
CLOSE_RESTART = 1012  # the gateway is going away: resume the session elsewhere
CLOSE_TAKEN_OVER = 4409  # the session was resumed on another connection
MAX_OUTBOX = 500  # messages waiting for a client before it counts as not reading
MAX_ERRORS = 100  # errors one connection may earn before it is closed (1008)


def stamp_seq(msg: dict[str, Any], n: int) -> None:
    msg["seq"] = n


class Connection:
    def __init__(
        self,
        ws: WebSocket,
        metrics: GatewayMetrics,
        send_timeout_s: float,
        stamp: Callable[[dict[str, Any], int], None] = stamp_seq,
    ) -> None:
        self.ws = ws
        self.metrics = metrics
        self.send_timeout_s = send_timeout_s
        self.stamp = stamp
        self.seq = 0
        self.errors = 0
        self.gone = asyncio.Event()  # set when the client cannot be written to any more
        self.fenced = False  # the session went on elsewhere: nothing more is sent or recorded
        # A resumable session's messages are recorded before they are sent (gateway/resume.py).
        self.journal: Journal | None = None
        self.unrecorded: set[str] = set()  # fields kept out of the record (a resume token)
        self._outbox: collections.deque[dict[str, Any] | tuple[int, str]] = collections.deque()
        self._ready = asyncio.Event()
        self.writer = asyncio.create_task(self._write(), name="ws-writer")

    def send(self, msg: dict[str, Any], error: str = "") -> None:
        """Queue `msg`; `error`: it tells the client of an error with that code (counted, and
        a connection that earns too many is closed)."""
        if self.gone.is_set():
            return
        if not error and msg.get("type") == "error":
            error = msg.get("code", "")
        if error:
            self.metrics.errors.labels(error).inc()
            self.errors += 1
            if self.errors > MAX_ERRORS:
                self._give_up("more than %d errors" % MAX_ERRORS, drop_queued=False)
                return
        if len(self._outbox) >= MAX_OUTBOX:
            self._give_up("%d messages waiting: the client does not read" % MAX_OUTBOX, drop_queued=True)
            return
        self._outbox.append(msg)
        self._ready.set()

    def replay(self, messages: list[dict[str, Any]], next_seq: int) -> None:
        """Send messages sent before (with their own `seq`, already recorded), then go on
        numbering from `next_seq`."""
        for msg in messages:
            self._outbox.append({**msg, "_replay": True})
        self._outbox.append({"_seq": next_seq})
        self._ready.set()

    def close_when_sent(self, code: int, reason: str = "") -> None:
        """Close with `code` once the messages queued before it are sent."""
        self._outbox.append((code, reason))
        self._ready.set()

    def _give_up(self, why: str, drop_queued: bool) -> None:
        logger.warning("closing a connection (1008): %s", why)
        self.metrics.errors.labels("not_reading" if drop_queued else "too_many_errors").inc()
        if drop_queued:
            self._outbox.clear()
        self._outbox.append((CLOSE_POLICY, ""))
        self._ready.set()
        self.gone.set()

    async def _write(self) -> None:
        try:
            while True:
                await self._ready.wait()
                if not self._outbox:
                    self._ready.clear()
                    continue
                item = self._outbox.popleft()
                if isinstance(item, tuple):
                    code, reason = item
                    closing = self.ws.close(code, reason) if reason else self.ws.close(code)
                    await asyncio.wait_for(closing, self.send_timeout_s)
                    return
                if "_seq" in item:
                    self.seq = item["_seq"]
                    continue
                if item.pop("_replay", False):
                    await asyncio.wait_for(
                        self.ws.send_text(json.dumps(item, separators=(",", ":"))), self.send_timeout_s
                    )
                    continue
                self.stamp(item, self.seq)
                self.seq += 1
                if self.journal is not None:
                    try:
                        await self.journal.log({k: v for k, v in item.items() if k not in self.unrecorded})
                    except REDIS_TRANSIENT as exc:
                        # Redis is out longer than writes ride through: the message still goes
                        # out; only a resume could miss it.
                        logger.warning("could not record a message for resuming: %s", exc)
                await asyncio.wait_for(self.ws.send_text(json.dumps(item, separators=(",", ":"))), self.send_timeout_s)
        except TimeoutError:
            logger.warning("closing a connection: nothing it was sent was read for %.0fs", self.send_timeout_s)
            self.metrics.errors.labels("not_reading").inc()
        except Fenced:
            # Resumed elsewhere: this connection says nothing more, not even what was queued.
            self.fenced = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(CLOSE_TAKEN_OVER, "resumed elsewhere"), self.send_timeout_s)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client went away; nothing more can reach it
        finally:
            self.gone.set()
            self._outbox.clear()

    async def finish(self, timeout: float = 5.0) -> None:
        """Let the writer send what is queued (a bounded wait), then stop it."""
        try:
            await asyncio.wait_for(asyncio.shield(self.writer), timeout)
        except TimeoutError:
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.writer
