"""The outgoing side of one WebSocket: messages in order, each stamped by its protocol (the
native `seq`, OpenAI's `event_id`), recorded for a resume before it is sent, and a client that
stops reading cannot make the gateway hold more than a bounded amount for it.

Two stages, each a task. The journal stage stamps each message and, for a resumable session,
logs it in Redis (gateway/store/journal.py), then hands it to the socket stage; a `record` of
the session's state goes through the journal stage too, so a state written after a message was
emitted is written after that message was logged (a gateway taking the session over never
finds a final counted as delivered that the log does not hold). The journal stage goes on when
the client is gone: what the session says is still logged for a resume. The socket stage sends:
a client that does not read fills the socket's buffers first, then the stage waits; if it waits
longer than SEND_TIMEOUT_S, or MAX_OUTBOX messages pile up behind it, the client is given up: its
close frame (1008) is queued, and the server drops the socket (see gateway/transport/server.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from common.lifecycle import REDIS_TRANSIENT
from common.protocol import CLOSE_POLICY, CLOSE_TAKEN_OVER
from gateway.metrics import GatewayMetrics
from gateway.store.journal import Fenced, Journal

logger = logging.getLogger(__name__)

MAX_OUTBOX = 500  # messages waiting for a client before it counts as not reading
MAX_ERRORS = 100  # errors one connection may earn before it is closed (1008)


def stamp_seq(msg: dict[str, Any], n: int) -> None:
    msg["seq"] = n


@dataclass(frozen=True)
class Close:
    code: int
    reason: str = ""


@dataclass
class Mark:
    """A record of the session's state, or a new `seq` to number from; done when written."""

    fields: dict[str, str] | None = None
    next_seq: int | None = None
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


Item = dict[str, Any] | Close | Mark


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
        self.journal: Journal | None = None  # a resumable session's (attach_journal)
        self.unrecorded: frozenset[str] = frozenset()  # fields kept out of the log (a resume token)
        self._items: collections.deque[Item] = collections.deque()  # for the journal stage
        self._outbox: collections.deque[str | Close] = collections.deque()  # for the socket stage
        self._items_ready = asyncio.Event()
        self._outbox_ready = asyncio.Event()
        self._finishing = False
        self._closing = False  # a close is queued: nothing more is sent
        self.journaler = asyncio.create_task(self._journal_stage(), name="ws-journal")
        self.writer = asyncio.create_task(self._socket_stage(), name="ws-writer")

    def attach_journal(self, journal: Journal, unrecorded: frozenset[str] = frozenset({"resume_token"})) -> None:
        """From now on every message is logged in `journal` before it is sent (without the
        `unrecorded` fields)."""
        self.journal, self.unrecorded = journal, unrecorded

    def send(self, msg: dict[str, Any], error: str = "") -> None:
        """Queue `msg`; `error`: it tells the client of an error with that code (counted, and
        a connection that earns too many is closed). A client that is gone gets nothing more,
        but a resumable session's messages are still logged for its resume."""
        if self.fenced or ((self._closing or self.gone.is_set()) and self.journal is None):
            return
        if not error and msg.get("type") == "error":
            error = msg.get("code", "")
        if error:
            self.metrics.errors.labels(error).inc()
            self.errors += 1
            if self.errors > MAX_ERRORS and not self._closing:
                self._give_up("more than %d errors" % MAX_ERRORS, drop_queued=False)
                return
        if not self.gone.is_set() and len(self._outbox) + len(self._items) >= MAX_OUTBOX:
            self._give_up("%d messages waiting: the client does not read" % MAX_OUTBOX, drop_queued=True)
            if self.journal is None:
                return
        self._put(msg)

    def replay(self, messages: list[dict[str, Any]], next_seq: int) -> None:
        """Send messages sent before (with their own `seq`, already logged), then go on
        numbering from `next_seq`."""
        for msg in messages:
            self._put({**msg, "_replay": True})
        self._put(Mark(next_seq=next_seq))

    def close_when_sent(self, code: int, reason: str = "") -> None:
        """Close with `code` once the messages queued before it are sent."""
        self._put(Close(code, reason))

    async def record(self, fields: dict[str, str]) -> None:
        """Write fields of the session's resumable state, after every message queued before
        (Fenced: the session is another gateway's now). Nothing without a journal."""
        if self.journal is None:
            return
        if self.fenced:
            raise Fenced("recorded after a takeover")
        mark = Mark(fields=fields)
        self._put(mark)
        await mark.done

    def _put(self, item: Item) -> None:
        self._items.append(item)
        self._items_ready.set()

    def _give_up(self, why: str, drop_queued: bool) -> None:
        """Close the client with 1008: at once, dropping what waits for it (`drop_queued`: it
        does not read), or after what was queued before."""
        logger.warning("closing a connection (1008): %s", why)
        self.metrics.errors.labels("not_reading" if drop_queued else "too_many_errors").inc()
        self._closing = True
        if not drop_queued:
            self._put(Close(CLOSE_POLICY))
            return
        self._outbox.clear()
        if self.journal is None:
            self._items = collections.deque(i for i in self._items if isinstance(i, Mark))
        self._outbox.append(Close(CLOSE_POLICY))
        self._outbox_ready.set()
        self.gone.set()

    def _to_socket(self, item: str | Close) -> None:
        if not self.gone.is_set():
            self._outbox.append(item)
            self._outbox_ready.set()

    async def _journal_stage(self) -> None:
        while True:
            if not self._items:
                if self._finishing:
                    return
                self._items_ready.clear()
                await self._items_ready.wait()
                continue
            item = self._items.popleft()
            if isinstance(item, Mark):
                await self._mark(item)
            elif isinstance(item, Close):
                self._to_socket(item)
            elif self.fenced:
                continue
            elif item.pop("_replay", False):
                self._to_socket(json.dumps(item, separators=(",", ":")))
            else:
                self.stamp(item, self.seq)
                self.seq += 1
                if await self._log(item):
                    self._to_socket(json.dumps(item, separators=(",", ":")))

    async def _mark(self, mark: Mark) -> None:
        try:
            if mark.next_seq is not None:
                self.seq = mark.next_seq
            elif self.fenced:
                raise Fenced("recorded after a takeover")
            elif self.journal is not None and mark.fields is not None:
                await self.journal.update(mark.fields)
        except Fenced as exc:
            self._fence()
            if not mark.done.done():
                mark.done.set_exception(exc)
        except Exception as exc:
            if not mark.done.done():
                mark.done.set_exception(exc)
        else:
            if not mark.done.done():
                mark.done.set_result(None)

    async def _log(self, msg: dict[str, Any]) -> bool:
        """Log a message about to be sent; whether it is still to be sent."""
        if self.journal is None:
            return True
        try:
            await self.journal.log({k: v for k, v in msg.items() if k not in self.unrecorded})
        except Fenced:
            self._fence()
            return False
        except REDIS_TRANSIENT as exc:
            # Redis is out longer than writes ride through: the message still goes out; only a
            # resume could miss it.
            logger.warning("could not record a message for resuming: %s", exc)
        return True

    def _fence(self) -> None:
        """Resumed elsewhere: this connection says nothing more, not even what was queued."""
        if self.fenced:
            return
        self.fenced = True
        self._outbox.clear()
        self._to_socket(Close(CLOSE_TAKEN_OVER, "resumed elsewhere"))

    async def _socket_stage(self) -> None:
        try:
            while True:
                if not self._outbox:
                    if self._finishing and not self._items:
                        return
                    self._outbox_ready.clear()
                    await self._outbox_ready.wait()
                    continue
                item = self._outbox.popleft()
                if isinstance(item, Close):
                    closing = self.ws.close(item.code, item.reason) if item.reason else self.ws.close(item.code)
                    await asyncio.wait_for(closing, self.send_timeout_s)
                    return
                await asyncio.wait_for(self.ws.send_text(item), self.send_timeout_s)
        except TimeoutError:
            logger.warning("closing a connection: nothing it was sent was read for %.0fs", self.send_timeout_s)
            self.metrics.errors.labels("not_reading").inc()
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client went away; nothing more can reach it
        finally:
            self.gone.set()
            self._outbox.clear()

    async def finish(self, timeout: float = 5.0) -> None:
        """Log and send what is queued (a bounded wait), then stop both stages."""
        self._finishing = True
        self._items_ready.set()
        self._outbox_ready.set()
        for task in (self.journaler, self.writer):
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for item in self._items:
            if isinstance(item, Mark) and not item.done.done():
                item.done.set_exception(ConnectionError("the connection ended before the record"))
