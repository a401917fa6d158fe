"""The gateway end to end: real WebSocket clients, a real gateway and decoder process, real Redis,
the micro model and espeak-ng speech with known pauses."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from client.speech import SENTENCES, Speech, conversation
from common import keys
from common.audio import float32_to_pcm16
from common.messages import decode_job
from tests.conftest import async_wait_for, make_settings
from tests.gateway.conftest import Cluster
from tests.gateway.wsclient import check_invariants, finals, run_session


async def test_three_sentences_three_finals_with_their_spans(cluster: Cluster, three_sentences: Speech) -> None:
    msgs = await run_session(cluster.url, three_sentences.pcm16)
    check_invariants(msgs)
    got = finals(msgs)
    assert [f["utterance"] for f in got] == [0, 1, 2]
    for f, (start, end) in zip(got, three_sentences.spans):
        assert abs(f["start"] - start) < 0.4, (f, start)
        assert abs(f["end"] - end) < 0.4, (f, end)
        assert f["text"] and f["language"] == "en"
    assert any(m["type"] == "interim" for m in msgs)


@pytest.mark.parametrize("rate", [8000, 16000, 48000, 44100])
async def test_rates_and_base64_give_the_same_utterances(cluster: Cluster, three_sentences: Speech,
                                                         rate: int) -> None:
    pcm = three_sentences.pcm16_at(rate)
    msgs = await run_session(cluster.url, pcm, rate=rate, base64_json=rate == 16000)
    check_invariants(msgs)
    assert len(finals(msgs)) == 3


async def test_two_sessions_get_only_their_own_results(cluster: Cluster) -> None:
    a = conversation([SENTENCES[0]], tail_s=1.5)
    b = conversation(list(SENTENCES[3:5]), pause_s=1.2)
    ma, mb = await asyncio.gather(run_session(cluster.url, a.pcm16), run_session(cluster.url, b.pcm16))
    check_invariants(ma)
    check_invariants(mb)
    assert len(finals(ma)) == 1 and len(finals(mb)) == 2
    assert ma[0]["session_id"] != mb[0]["session_id"]


async def test_decoder_stopped_then_restarted_final_arrives_once(cluster: Cluster, spawn: Any,
                                                                aredis: Any) -> None:
    cluster.decoder.signal(signal.SIGTERM)
    assert await asyncio.to_thread(cluster.decoder.wait, 30) == 0
    speech = conversation([SENTENCES[0]], tail_s=1.5)
    task = asyncio.create_task(run_session(cluster.url, speech.pcm16, start={"interim": False}))
    await async_wait_for(lambda: aredis.xlen(keys.STREAM_FINAL), 30, "the final to be queued")
    spawn(["decoder"], {**cluster.env, "DECODER_ID": "dec-2"}, name="decoder2")
    msgs = await asyncio.wait_for(task, 60)
    check_invariants(msgs)
    assert len(finals(msgs)) == 1


@pytest.mark.parametrize("cluster", [{"FINAL_TIMEOUT_S": 60.0}], indirect=True)
async def test_result_lost_while_resubscribing_is_answered_from_the_cache(cluster: Cluster, spawn: Any,
                                                                         aredis: Any) -> None:
    """The gateway's subscription drops, and the decoder publishes the final to nobody meanwhile.
    On resubscribing the gateway re-queues it; the decoder answers from its result cache (no
    second decode) long before FINAL_TIMEOUT_S would have re-queued it."""
    cluster.decoder.signal(signal.SIGTERM)
    assert await asyncio.to_thread(cluster.decoder.wait, 30) == 0
    speech = conversation([SENTENCES[0]], tail_s=1.5)
    task = asyncio.create_task(run_session(cluster.url, speech.pcm16, start={"interim": False}))
    await async_wait_for(lambda: aredis.xlen(keys.STREAM_FINAL), 30, "the final to be queued")
    channel = keys.results_channel(cluster.settings.GATEWAY_ID)
    cluster.gateway.signal(signal.SIGSTOP)
    try:
        assert await aredis.client_kill_filter(_type="pubsub") == 1
        assert (await aredis.pubsub_numsub(channel))[0][1] == 0
        decoder = spawn(["decoder"], {**cluster.env, "DECODER_ID": "dec-2"}, name="decoder2")
        [(_, fields)] = await aredis.xrange(keys.STREAM_FINAL)
        job_id = decode_job(fields[keys.JOB_FIELD]).id
        await async_wait_for(lambda: aredis.exists(keys.result_key(job_id)), 60, "the final decoded")
    finally:
        cluster.gateway.signal(signal.SIGCONT)
    msgs = await asyncio.wait_for(task, 30)
    check_invariants(msgs)
    assert len(finals(msgs)) == 1
    await async_wait_for(lambda: "answered from the result cache" in decoder.output(), 10, "the cache hit")
    assert decoder.output().count("answered from the result cache") == 1


async def _expect(ws: Any, code: str) -> dict[str, Any]:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg["type"] == "error":
            assert msg["code"] == code, msg
            return msg


BAD_INPUTS = ["bad_json", "unknown_op", "not_started", "odd_bytes", "bad_sample_rate", "frame_too_large"]


@pytest.mark.parametrize("case", BAD_INPUTS)
async def test_bad_input_gets_clear_error_and_spares_other_sessions(cluster: Cluster, case: str) -> None:
    clean = conversation([SENTENCES[4]], tail_s=1.5)
    clean_task = asyncio.create_task(run_session(cluster.url, clean.pcm16, speed=4.0))
    async with websockets.connect(cluster.url, max_size=2**23) as ws:
        fatal = {"bad_sample_rate": 4400, "frame_too_large": 1009}
        if case not in ("not_started",):
            rate = 12345678 if case == "bad_sample_rate" else 16000
            await ws.send(json.dumps({"op": "start", "sample_rate": rate, "lang": "en"}))
        if case == "bad_json":
            await ws.send("{nope")
        elif case == "unknown_op":
            await ws.send(json.dumps({"op": "sing"}))
        elif case == "not_started":
            await ws.send(b"\x00\x00" * 160)
        elif case == "odd_bytes":
            await ws.send(b"\x00" * 321)
        elif case == "frame_too_large":
            await ws.send(b"\x00\x00" * (cluster.settings.MAX_FRAME_BYTES // 2 + 8))
        await _expect(ws, case)
        if case in fatal:
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == fatal[case]
        else:
            # The session goes on: a keepalive and stop still work.
            if case == "not_started":
                await ws.send(json.dumps({"op": "start", "sample_rate": 16000}))
            await ws.send(json.dumps({"op": "stop"}))
            types = []
            async for raw in ws:
                types.append(json.loads(raw)["type"])
                if types[-1] == "done":
                    break
            assert types[-1] == "done"
    if case not in fatal:
        assert ws.close_code == 1000
    clean_msgs = await asyncio.wait_for(clean_task, 60)
    check_invariants(clean_msgs)
    assert len(finals(clean_msgs)) == 1
    assert cluster.gateway.popen.poll() is None


async def test_server_closes_1000_after_done_when_client_stays(cluster: Cluster) -> None:
    """A client written for the seed reads on after `done` until it times out: the gateway
    waits for it a while, then closes with 1000."""
    async with websockets.connect(cluster.url) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "lang": "en"}))
        await ws.send(json.dumps({"op": "stop"}))
        types = []
        with pytest.raises(ConnectionClosed):
            while True:
                types.append(json.loads(await asyncio.wait_for(ws.recv(), 15))["type"])
        assert types == ["started", "done"] and ws.close_code == 1000


async def test_health_status_and_metrics(cluster: Cluster) -> None:
    await run_session(cluster.url, conversation([SENTENCES[0]], tail_s=1.5).pcm16)
    async with httpx.AsyncClient(base_url=cluster.http) as http:
        assert (await http.get("/ready")).json()["ready"] is True
        status = (await http.get("/status")).json()
        assert status["queues"] == {"final": 0, "interim": 0}
        assert status["decoders"][0]["model"] == cluster.settings.MODEL_NAME
        body = (await http.get("/metrics")).text
    assert "stt_final_latency_seconds_count 1.0" in body
    assert "stt_gateway_sessions 0.0" in body


async def test_overloaded_cluster_refuses_new_session_with_1013(cluster: Cluster, sredis: Any) -> None:
    cluster.decoder.signal(signal.SIGTERM)  # nobody drains the backlog
    assert await asyncio.to_thread(cluster.decoder.wait, 30) == 0
    for _ in range(cluster.settings.MAX_FINAL_BACKLOG):
        sredis.xadd(keys.STREAM_FINAL, {"job": b"x"})
    async with websockets.connect(cluster.url) as ws:
        await _expect(ws, "overloaded")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1013


def test_settings_for_tests_are_valid(micro_model: Any) -> None:
    make_settings(micro_model, "redis://127.0.0.1:1/0", PORT=1)
    assert float32_to_pcm16(np.zeros(2, np.float32)) == b"\x00" * 4
