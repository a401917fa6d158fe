"""The client library's resume against a scripted gateway (a real WebSocket server on a free
port, saying exactly what a gateway may say): every message comes once, whatever the order of
the replay, the new messages and `resumed` on the new connection."""

from __future__ import annotations

import json
from typing import Any

import pytest
import websockets

from client.stream import connect
from common.redis_server import free_port

pytestmark = pytest.mark.timeout(20)


def final(n: int, seq: int) -> dict[str, Any]:
    return {"type": "final", "utterance": n, "text": "sentence %d" % n, "seq": seq}


async def scripted_gateway(port: int, after_resume: list[dict[str, Any]]) -> Any:
    """First connection: `started`, final 0, then the connection breaks (1012: restarting).
    Second: the client's `resume`, then `after_resume`, then `done` after its `stop`."""
    connections = [0]

    async def handler(ws: Any) -> None:
        first = json.loads(await ws.recv())
        connections[0] += 1
        if first["op"] == "start":
            await ws.send(json.dumps({"type": "started", "session_id": "s1", "resume_token": "t" * 32, "seq": 0}))
            await ws.send(json.dumps(final(0, 1)))
            await ws.close(1012)
            return
        assert first == {"op": "resume", "session_id": "s1", "resume_token": "t" * 32, "last_seq": 1}
        for msg in after_resume:
            await ws.send(json.dumps(msg))
        async for raw in ws:
            if isinstance(raw, str) and json.loads(raw)["op"] == "stop":
                await ws.send(json.dumps({"type": "done", "seq": 99}))
                await ws.close()
                return

    return await websockets.serve(handler, "127.0.0.1", port)


async def finals_after_a_resume(after_resume: list[dict[str, Any]]) -> list[int]:
    port = free_port()
    server = await scripted_gateway(port, after_resume)
    try:
        async with connect("ws://127.0.0.1:%d" % port, sample_rate=16000) as stream:
            got = [m async for m in stream.receive_while(stream.send_audio(b"\0\0" * 1600, speed=0))]
        assert stream.resumes == 1
        return [m["utterance"] for m in got if m["type"] == "final"]
    finally:
        server.close()
        await server.wait_closed()


async def test_missed_messages_are_replayed_before_resumed() -> None:
    missed = [final(1, 2), {"type": "resumed", "session_id": "s1", "audio_received_ms": 0, "utterance": 2, "seq": 3}]
    assert await finals_after_a_resume(missed) == [0, 1]


async def test_a_message_numbered_before_resumed_is_not_taken_for_one_seen_already() -> None:
    """A final the session's first step delivers may be numbered before `resumed` (a gateway that
    announced the resume after that step): it is new, and yielded once."""
    early = [
        final(1, 2),
        final(2, 3),
        {"type": "resumed", "session_id": "s1", "audio_received_ms": 0, "utterance": 3, "seq": 4},
        final(2, 3),  # the same message again: skipped
    ]
    assert await finals_after_a_resume(early) == [0, 1, 2]


async def test_connect_sends_the_start_options_it_is_given() -> None:
    starts: list[dict[str, Any]] = []

    async def handler(ws: Any) -> None:
        starts.append(json.loads(await ws.recv()))
        await ws.send(json.dumps({"type": "started", "session_id": "s", "resume_token": "t" * 32, "seq": 0}))
        await ws.wait_closed()

    port = free_port()
    server = await websockets.serve(handler, "127.0.0.1", port)
    try:
        async with connect("ws://127.0.0.1:%d" % port, end_of_turn="model", eager_eot_ms=300, resume=False):
            pass
        async with connect("ws://127.0.0.1:%d" % port, resume=False):
            pass
    finally:
        server.close()
        await server.wait_closed()
    assert starts[0]["end_of_turn"] == "model" and starts[0]["eager_eot_ms"] == 300
    assert "end_of_turn" not in starts[1] and "eager_eot_ms" not in starts[1]  # the service's defaults
