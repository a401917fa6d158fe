"""A plain test client over a real WebSocket: sends audio in real-time-sized chunks (faster
than real time), collects every server message."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import websockets


async def run_session(
    url: str,
    pcm: bytes,
    rate: int = 16000,
    chunk_ms: int = 100,
    base64_json: bool = False,
    speed: float = 8.0,
    start: dict[str, Any] | None = None,
    timeout: float = 60.0,
    after_start: Callable[[], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """Stream `pcm`, stop, and return every message up to `done` (`after_start` runs once the
    session is started, before any audio is sent)."""
    async with websockets.connect(url, max_size=2**23) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": rate, "lang": "en", **(start or {})}))
        if after_start is not None:
            first = await ws.recv()
            await after_start()
        else:
            first = None
        step = rate * 2 * chunk_ms // 1000
        for i in range(0, len(pcm), step):
            chunk = pcm[i : i + step]
            if base64_json:
                await ws.send(json.dumps({"op": "audio", "payload": base64.b64encode(chunk).decode()}))
            else:
                await ws.send(chunk)
            await asyncio.sleep(chunk_ms / 1000 / speed)
        await ws.send(json.dumps({"op": "stop"}))
        out = [json.loads(first)] if first is not None else []
        async with asyncio.timeout(timeout):
            async for raw in ws:
                out.append(json.loads(raw))
                if out[-1]["type"] == "done":
                    break
    assert ws.close_code == 1000, (ws.close_code, out[-3:])
    return out


def finals(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if m["type"] == "final"]


def check_invariants(msgs: list[dict[str, Any]]) -> None:
    assert [m["seq"] for m in msgs] == list(range(len(msgs))), "seq has a gap"
    assert msgs[0]["type"] == "started" and msgs[-1]["type"] == "done"
    finalized: set[int] = set()
    last: dict[int, dict[str, Any]] = {}
    for m in msgs:
        if m["type"] == "final":
            assert m["utterance"] not in finalized
            finalized.add(m["utterance"])
        if m["type"] != "interim":
            continue
        n = m["utterance"]
        assert n not in finalized, "interim after its final"
        prev = last.get(n)
        if prev is not None:
            assert m["rev"] > prev["rev"]
            assert m["stable_chars"] >= prev["stable_chars"]
            assert m["text"].startswith(prev["text"][: prev["stable_chars"]])
        last[n] = m
    # Each utterance, in order, gets exactly one final or one error naming it.
    resolved = [m["utterance"] for m in msgs if m["type"] == "final" or (m["type"] == "error" and "utterance" in m)]
    assert resolved == list(range(len(resolved)))
