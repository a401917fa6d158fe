"""The outgoing side of a connection, against a WebSocket that stops taking what it is sent: the
gateway gives the client up within a bounded time and holds a bounded amount for it."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.connection import CLOSE_POLICY, MAX_ERRORS, MAX_OUTBOX, Connection
from gateway.metrics import GatewayMetrics


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

    async def close(self, code: int = 1000) -> None:
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
    assert not conn._outbox


async def test_what_waits_for_a_client_is_bounded() -> None:
    ws = StuckSocket(accepts=0)
    metrics = GatewayMetrics()
    conn = Connection(ws, metrics, send_timeout_s=60)  # type: ignore[arg-type]
    for i in range(MAX_OUTBOX * 3):
        conn.send({"type": "interim", "n": i})
    assert conn.gone.is_set()
    assert len(conn._outbox) <= 1 and list(conn._outbox) == [(CLOSE_POLICY, "")]  # only the close is left
    assert metrics.errors.labels("not_reading")._value.get() == 1
    conn.writer.cancel()


async def test_a_client_that_earns_too_many_errors_is_closed() -> None:
    ws = StuckSocket(accepts=10**6)
    conn = Connection(ws, GatewayMetrics(), send_timeout_s=5)  # type: ignore[arg-type]
    for _ in range(MAX_ERRORS + 5):
        conn.send({"type": "error", "code": "bad_json", "message": "message is not valid JSON"})
    await asyncio.wait_for(conn.writer, 5)
    errors: list[Any] = [m for m in ws.sent if '"error"' in m]
    assert len(errors) == MAX_ERRORS and ws.closed == [CLOSE_POLICY]
