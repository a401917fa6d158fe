"""The outgoing side of a connection, against a WebSocket that stops taking what it is sent: the
gateway gives the client up within a bounded time and holds a bounded amount for it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from common.protocol import CLOSE_POLICY
from gateway.metrics import GatewayMetrics
from gateway.store.journal import Fenced
from gateway.transport.connection import MAX_ERRORS, MAX_OUTBOX, Close, Connection


class StuckSocket:
    """A WebSocket whose client reads `accepts` messages, then nothing."""

    def __init__(self, accepts: int = 0) -> None:
        self.sent: list[str] = []
        self.closed: list[int] = []
        self.accepts = accepts

    async def send_text(self, text: str) -> None:
        if len(self.sent) >= self.accepts:
            await asyncio.Event().wait()  # blocked, as on a full socket
        self.sent.append(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if len(self.sent) >= self.accepts:
            await asyncio.Event().wait()
        self.closed.append(code)


async def test_a_client_that_stops_reading_is_given_up_after_the_send_timeout() -> None:
    ws = StuckSocket(accepts=2)
    conn = Connection(ws, GatewayMetrics(), send_timeout_s=0.2)  # type: ignore[arg-type]
    for i in range(5):
        conn.send({"type": "interim", "n": i})
    await asyncio.wait_for(conn.gone.wait(), 5)
    await asyncio.wait_for(conn.writer, 5)
    assert [m for m in ws.sent] == ['{"type":"interim","n":0,"seq":0}', '{"type":"interim","n":1,"seq":1}']
    conn.send({"type": "final"})  # nothing more is queued for a client that is gone
    assert not conn._outbox and not conn._items


async def test_what_waits_for_a_client_is_bounded() -> None:
    ws = StuckSocket(accepts=0)
    metrics = GatewayMetrics()
    conn = Connection(ws, metrics, send_timeout_s=60)  # type: ignore[arg-type]
    for i in range(MAX_OUTBOX * 3):
        conn.send({"type": "interim", "n": i})
    assert conn.gone.is_set()
    assert list(conn._outbox) == [Close(CLOSE_POLICY)] and not conn._items  # only the close is left
    assert metrics.errors.labels("not_reading")._value.get() == 1
    conn.writer.cancel()
    conn.journaler.cancel()


async def test_a_client_that_earns_too_many_errors_is_closed() -> None:
    ws = StuckSocket(accepts=10**6)
    conn = Connection(ws, GatewayMetrics(), send_timeout_s=5)  # type: ignore[arg-type]
    for _ in range(MAX_ERRORS + 5):
        conn.send({"type": "error", "code": "bad_json", "message": "message is not valid JSON"})
    await asyncio.wait_for(conn.writer, 5)
    errors: list[Any] = [m for m in ws.sent if '"error"' in m]
    assert len(errors) == MAX_ERRORS and ws.closed == [CLOSE_POLICY]


class SlowJournal:
    """A session's journal in memory whose writes take a while (Redis under load)."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Any]] = []
        self.fenced = False

    async def update(self, fields: dict[str, str]) -> None:
        await asyncio.sleep(0.01)
        if self.fenced:
            raise Fenced("s")
        self.writes.append(("update", dict(fields)))

    async def log(self, msg: dict[str, Any]) -> None:
        await asyncio.sleep(0.01)
        if self.fenced:
            raise Fenced("s")
        self.writes.append(("log", msg["seq"]))


async def test_a_record_is_written_after_every_message_queued_before_it() -> None:
    """A state that says a final was delivered is never written before the final is logged."""
    ws, journal = StuckSocket(accepts=10**6), SlowJournal()
    conn = Connection(ws, GatewayMetrics(), send_timeout_s=5)  # type: ignore[arg-type]
    conn.attach_journal(journal)
    for i in range(3):
        conn.send({"type": "final", "utterance": i})
    await conn.record({"core": "next_final=3"})
    assert [w[0] for w in journal.writes] == ["log", "log", "log", "update"]
    await conn.finish()


async def test_messages_are_logged_for_a_resume_after_the_client_is_gone() -> None:
    ws, journal = StuckSocket(accepts=1), SlowJournal()
    conn = Connection(ws, GatewayMetrics(), send_timeout_s=0.1)  # type: ignore[arg-type]
    conn.attach_journal(journal)
    conn.send({"type": "interim"})
    conn.send({"type": "interim"})
    await asyncio.wait_for(conn.gone.wait(), 5)
    conn.send({"type": "final", "utterance": 0})  # decided after the client stopped reading
    await conn.record({"core": "next_final=1"})
    assert journal.writes == [("log", 0), ("log", 1), ("log", 2), ("update", {"core": "next_final=1"})]
    assert len(ws.sent) == 1
    await conn.finish()


async def test_a_session_taken_over_says_nothing_more_and_its_records_are_refused() -> None:
    ws, journal = StuckSocket(accepts=10**6), SlowJournal()
    conn = Connection(ws, GatewayMetrics(), send_timeout_s=5)  # type: ignore[arg-type]
    conn.attach_journal(journal)
    conn.send({"type": "interim"})
    await conn.record({"pos": "1"})
    journal.fenced = True
    conn.send({"type": "final"})
    with pytest.raises(Fenced):
        await conn.record({"pos": "2"})
    await asyncio.wait_for(conn.writer, 5)
    assert conn.fenced and len(ws.sent) == 1 and ws.closed == [4409]
