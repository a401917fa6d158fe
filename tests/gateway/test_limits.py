"""Hostile clients against a gateway in this process: one client cannot hurt another, and
nothing a client sends makes the gateway hold much for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import statistics
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from common import keys
from gateway.transport.limits import TokenBucket
from stt.speech import SENTENCES, Speech, conversation
from tests.conftest import async_wait_for
from tests.gateway.conftest import Cluster, Gateway
from tests.gateway.test_protocol import expect_error, read_until_closed, stop_and_expect_done
from tests.gateway.wsclient import check_invariants, finals, run_session


def test_a_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(10.0, 1.5, clock=lambda: now[0])
    assert bucket.spend(8.0) == 0.0
    assert bucket.spend(4.0) == pytest.approx(2.0 / 1.5)  # 2 s over: wait until 1.5x refilled them
    now[0] += 100.0
    assert bucket.spend(10.0) == 0.0  # refilled, but never past the burst


async def final_latencies(url: str, speech: Speech) -> list[tuple[float, float]]:
    """Stream `speech` in real time; per final, seconds from the end of its sentence to arrival,
    and the seconds of that its job waited in the decoders' queue."""
    loop = asyncio.get_running_loop()
    got: list[tuple[float, dict[str, Any]]] = []
    async with websockets.connect(url, max_size=2**23) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "lang": "en", "interim": True}))
        assert json.loads(await ws.recv())["type"] == "started"
        t0 = loop.time()

        async def send() -> None:
            pcm = speech.pcm16
            for i in range(0, len(pcm), 3200):
                await asyncio.sleep(max(0.0, t0 + i / 32000 - loop.time()))
                await ws.send(pcm[i : i + 3200])
            await ws.send(json.dumps({"op": "stop"}))

        sender = asyncio.create_task(send())
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "final":
                got.append((loop.time() - t0, msg))
            if msg["type"] == "done":
                break
        await sender
    assert len(got) == len(speech.spans), got
    for (at, msg), (_, end) in zip(got, speech.spans):  # where the time went, for the record (-s)
        where = (msg["utterance"], at - end, msg["endpoint_ms"], msg["queue_ms"], msg["decode_ms"])
        print("final %d: %.3f s (endpoint %.0f, queue %.0f, decode %.0f ms)" % where)
    return [(at - end, msg["queue_ms"] / 1000.0) for (at, msg), (_, end) in zip(got, speech.spans)]


async def flood(url: str, speech: Speech, finalize_every: int = 0) -> tuple[list[dict[str, Any]], int | None]:
    """Speech as fast as the gateway takes it (a `finalize` after every `finalize_every` chunks
    of 100 ms when set), then stop: every message received, and the close code."""
    msgs: list[dict[str, Any]] = []
    async with websockets.connect(url, max_size=2**23) as ws:

        async def send() -> None:
            await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "lang": "en"}))
            pcm = speech.pcm16
            for n, i in enumerate(range(0, len(pcm), 3200)):
                await ws.send(pcm[i : i + 3200])
                if finalize_every and n % finalize_every == 0:
                    await ws.send(json.dumps({"op": "finalize"}))
            await ws.send(json.dumps({"op": "stop"}))

        sender = asyncio.create_task(send())
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                msgs.append(json.loads(raw))
        with contextlib.suppress(ConnectionClosed):
            await sender
    return msgs, ws.close_code


def throttled_s(http: str) -> float:
    body = httpx.get(http + "/metrics", timeout=5).text
    return float(re.search(r"^stt_gateway_throttled_seconds_total (\S+)", body, re.M).group(1))  # type: ignore[union-attr]


@pytest.mark.slow
async def test_fast_and_finalize_flooding_clients_leave_a_normal_session_its_latency(cluster: Cluster) -> None:
    """Three clients pour audio as fast as they can, one sends `finalize` every 200 ms: they are
    held to the allowed rate and then refused (too_fast, 1008), and a normal session beside them
    keeps its final latency: the same session streamed alone first, in the same run, is the
    yardstick.

    What floods held to the allowed rate still cost a neighbour is the decoder's time: their
    jobs are decoded too. Measured (2-core machine, under coverage as CI runs it, the
    random-weight model whose every final falls back through all six temperatures: 3 s for a
    flood's 8 s utterance): alone 0.65-0.74 s every run. Beside, before two fixes, one or two
    finals of six took 1.5-6.3 s: queued behind floods' finals that the refused clients would
    never hear (now cancelled when a session ends for good), and held for seconds after their
    own decode by a batch-mate's fallback (now each result goes out as its job is done). After,
    five runs: the median as alone (0.67 s), the worst 1.16-2.6 s, all of the excess queue
    wait (0.2-1.6 s) for the floods' live jobs. With tiny.en the floods' 6x real time of audio
    saturates two cores (0.6-0.8 s a decode beside them). A decoder takes finals first but
    does not stop a decode it has begun.

    So the bounds: the median final within 1.25x of alone (+0.1 s) says most finals were not
    slowed at all; and every final, less its wait in the decoders' queue, within 1.5x of the
    worst alone (+0.2 s): what the gateway does (its VAD, endpoint, queueing and delivery, on
    a loop the floods share) is untouched, and the decoder wait is the shared machine's, whose
    scheduling the decoder's tests cover (tests/decoder/test_scheduler.py)."""
    normal = conversation(list(SENTENCES[:6]), pause_s=1.2)
    alone = await final_latencies(cluster.url, normal)
    long_speech = conversation(list(SENTENCES) * 3, pause_s=0.6)
    attackers = [asyncio.create_task(flood(cluster.url, long_speech)) for _ in range(3)]
    attackers.append(asyncio.create_task(flood(cluster.url, long_speech, finalize_every=2)))
    await async_wait_for(lambda: throttled_s(cluster.http) > 0, 30, "the floods held")
    beside = await final_latencies(cluster.url, normal)
    for task in attackers:
        msgs, close_code = await asyncio.wait_for(task, 120)
        check_invariants([*msgs, {"type": "done", "seq": msgs[-1]["seq"] + 1}])  # what it got is in order
        assert msgs[-1]["type"] == "error" and msgs[-1]["code"] == "too_fast" and close_code == 1008, msgs[-1]
    assert throttled_s(cluster.http) >= 3 * 10.0
    print("final latency alone %s, beside the floods %s" % (alone, beside))  # for the record (-s)
    latency = {"alone": [t for t, _ in alone], "beside": [t for t, _ in beside]}
    assert statistics.median(latency["beside"]) <= 1.25 * statistics.median(latency["alone"]) + 0.1, latency
    worst_alone = max(latency["alone"])
    assert all(t - queued <= 1.5 * worst_alone + 0.2 for t, queued in beside), (alone, beside)


@pytest.mark.parametrize("gateway", [{"MAX_SESSIONS": 3, "START_TIMEOUT_S": 1.0}], indirect=True)
async def test_connections_count_from_accept_and_unstarted_ones_are_closed(gateway: Gateway) -> None:
    idle = [await websockets.connect(gateway.url) for _ in range(3)]
    try:
        async with websockets.connect(gateway.url) as extra:
            await expect_error(extra, "overloaded")
            await read_until_closed(extra)
            assert extra.close_code == 1013
        for ws in idle:
            msgs = await read_until_closed(ws)
            assert [m["code"] for m in msgs] == ["start_timeout"] and ws.close_code == 1008
    finally:
        for ws in idle:
            await ws.close()
    await async_wait_for(lambda: gateway.state.connections == 0, 10, "the connections to be counted out")
    async with websockets.connect(gateway.url) as ws:  # room again
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000}))
        assert json.loads(await ws.recv())["type"] == "started"
        await stop_and_expect_done(ws)


@pytest.mark.parametrize("gateway", [{"decoder": "none"}], indirect=True)
async def test_with_no_live_decoder_a_new_session_is_refused_at_once(gateway: Gateway) -> None:
    async with websockets.connect(gateway.url) as ws:
        error = await expect_error(ws, "overloaded")
        assert "no decoder" in error["message"]
        await read_until_closed(ws)
        assert ws.close_code == 1013


@pytest.mark.parametrize(
    ("field", "code"),
    [
        ("op", "unknown_op"),
        ("lang", "unknown_language"),
        ("prompt", "field_too_long"),
        ("encoding", "unsupported_encoding"),
    ],
)
async def test_a_megabyte_field_gets_a_short_error(gateway: Gateway, field: str, code: str) -> None:
    big = "x" * 1_000_000
    msg = {"op": big} if field == "op" else {"op": "start", "sample_rate": 16000, field: big}
    async with websockets.connect(gateway.url, max_size=2**23) as ws:
        await ws.send(json.dumps(msg))
        error = await expect_error(ws, code)
        assert len(json.dumps(error)) < 250, error
        # Refused, and nothing of it was taken: the session can still start cleanly.
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "lang": "en"}))
        started = json.loads(await ws.recv())
        assert started["type"] == "started" and started["lang"] == "en"
        await stop_and_expect_done(ws)


async def test_an_english_only_model_refuses_another_language_at_start(gateway: Gateway) -> None:
    assert gateway.state.english_only
    async with websockets.connect(gateway.url) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "lang": "de"}))
        await expect_error(ws, "unsupported_language")
        await read_until_closed(ws)
        assert ws.close_code == 4400


async def test_audio_is_deleted_once_delivered_and_every_key_expires(gateway: Gateway, aredis: Any) -> None:
    speech = conversation(list(SENTENCES[:3]), pause_s=1.2)
    msgs = await run_session(gateway.url, speech.pcm16)
    assert len(finals(msgs)) == 3
    session = msgs[0]["session_id"]

    async def audio_keys() -> list[Any]:
        return [k async for k in aredis.scan_iter(match=keys.audio_key(session, 0)[:-1] + "*")]

    await async_wait_for(lambda: _empty(audio_keys()), 10, "the session's audio to be deleted")
    forever = []
    async for key in aredis.scan_iter(match="stt:*"):
        if await aredis.type(key) != b"stream" and await aredis.ttl(key) < 0:
            forever.append(key)
    assert forever == [], "keys that never expire: %s" % forever


async def _empty(keys_: Any) -> bool:
    return not await keys_
