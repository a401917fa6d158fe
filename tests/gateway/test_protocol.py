"""The client protocol against a gateway served in this process (uvicorn on a free port, the real
app) and a decoder worker with the micro model beside it: real WebSocket clients, real Redis,
espeak-ng speech with known pauses. Every error path of the contract has its case here."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from common import keys
from common.audio import float32_to_pcm16
from common.messages import Result, decode_job, encode_result
from gateway.transport import host as gateway_host
from stt.speech import SENTENCES, Speech, conversation
from tests.conftest import async_wait_for, make_settings
from tests.gateway.conftest import Gateway
from tests.gateway.wsclient import check_invariants, finals, run_session


async def test_three_sentences_three_finals_with_their_spans(gateway: Gateway, three_sentences: Speech) -> None:
    msgs = await run_session(gateway.url, three_sentences.pcm16)
    check_invariants(msgs)
    got = finals(msgs)
    assert [f["utterance"] for f in got] == [0, 1, 2]
    for f, (start, end) in zip(got, three_sentences.spans):
        assert abs(f["start"] - start) < 0.4, (f, start)
        assert abs(f["end"] - end) < 0.4, (f, end)
        assert f["text"] and f["language"] == "en"
    assert any(m["type"] == "interim" for m in msgs)


@pytest.mark.parametrize("rate", [8000, 16000, 48000, 44100])
async def test_rates_and_base64_give_the_same_utterances(gateway: Gateway, three_sentences: Speech, rate: int) -> None:
    pcm = three_sentences.pcm16_at(rate)
    msgs = await run_session(gateway.url, pcm, rate=rate, base64_json=rate == 16000)
    check_invariants(msgs)
    assert len(finals(msgs)) == 3


async def test_two_sessions_get_only_their_own_results(gateway: Gateway) -> None:
    a = conversation([SENTENCES[0]], tail_s=1.5)
    b = conversation(list(SENTENCES[3:5]), pause_s=1.2)
    ma, mb = await asyncio.gather(run_session(gateway.url, a.pcm16), run_session(gateway.url, b.pcm16))
    check_invariants(ma)
    check_invariants(mb)
    assert len(finals(ma)) == 1 and len(finals(mb)) == 2
    assert ma[0]["session_id"] != mb[0]["session_id"]


async def expect_error(ws: Any, code: str) -> dict[str, Any]:
    while True:
        msg: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg["type"] == "error":
            assert msg["code"] == code, msg
            return msg


async def read_until_closed(ws: Any, timeout: float = 10) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed):
        while True:
            msgs.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    return msgs


async def stop_and_expect_done(ws: Any) -> None:
    await ws.send(json.dumps({"op": "stop"}))
    types = []
    async for raw in ws:
        types.append(json.loads(raw)["type"])
        if types[-1] == "done":
            break
    assert types[-1] == "done"


BAD_INPUTS = ["bad_json", "unknown_op", "not_started", "odd_bytes", "bad_sample_rate", "frame_too_large"]


@pytest.mark.parametrize("case", BAD_INPUTS)
async def test_bad_input_gets_clear_error_and_spares_other_sessions(gateway: Gateway, case: str) -> None:
    clean = conversation([SENTENCES[4]], tail_s=1.5)
    clean_task = asyncio.create_task(run_session(gateway.url, clean.pcm16, speed=4.0))
    fatal = {"bad_sample_rate": 4400, "frame_too_large": 1009}
    async with websockets.connect(gateway.url, max_size=2**23) as ws:
        if case != "not_started":
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
            await ws.send(b"\x00\x00" * (gateway.settings.MAX_FRAME_BYTES // 2 + 8))
        await expect_error(ws, case)
        if case in fatal:
            await read_until_closed(ws)
            assert ws.close_code == fatal[case]
        else:
            # The session goes on: start (if it was refused audio before it) and stop still work.
            if case == "not_started":
                await ws.send(json.dumps({"op": "start", "sample_rate": 16000}))
            await stop_and_expect_done(ws)
    if case not in fatal:
        assert ws.close_code == 1000
    clean_msgs = await asyncio.wait_for(clean_task, 60)
    check_invariants(clean_msgs)
    assert len(finals(clean_msgs)) == 1
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        assert (await http.get("/ready")).status_code == 200


async def test_a_second_start_is_refused_and_the_session_goes_on(gateway: Gateway) -> None:
    speech = conversation([SENTENCES[0]], tail_s=1.5)
    async with websockets.connect(gateway.url, max_size=2**23) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "lang": "en"}))
        await ws.send(json.dumps({"op": "start", "sample_rate": 8000, "lang": "en"}))
        error = await expect_error(ws, "already_started")
        assert error["seq"] == 1
        for i in range(0, len(speech.pcm16), 3200):
            await ws.send(speech.pcm16[i : i + 3200])
        await ws.send(json.dumps({"op": "stop"}))
        msgs = []
        async for raw in ws:
            msgs.append(json.loads(raw))
            if msgs[-1]["type"] == "done":
                break
    assert [m["utterance"] for m in finals(msgs)] == [0]


@pytest.mark.parametrize("gateway", [{"API_KEY": "old-key-0123456789,new-key-9876543210"}], indirect=True)
async def test_a_wrong_or_missing_api_key_is_refused_before_the_upgrade(gateway: Gateway) -> None:
    for url, headers in (
        (gateway.url, None),
        (gateway.url + "?token=nope", None),
        (gateway.url, {"Authorization": "Bearer old-key-0123456789x"}),
        (gateway.url, {"Authorization": "Bearer"}),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401
    # Both keys of a rotation work, as a header or as ?token=.
    for url, headers in (
        (gateway.url + "?token=old-key-0123456789", None),
        (gateway.url, {"Authorization": "Bearer new-key-9876543210"}),
    ):
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"op": "start", "sample_rate": 16000}))
            assert json.loads(await ws.recv())["type"] == "started"
            await stop_and_expect_done(ws)
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        assert (await http.get("/status")).status_code == 401
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/status", headers={"Authorization": "Bearer new-key-9876543210"})).status_code == 200
        assert (await http.get("/ready")).status_code == 200  # for load balancers: says nothing else
        assert (await http.get("/health")).json() == {"alive": True}  # for liveness probes, the same


@pytest.mark.parametrize("gateway", [{"IDLE_TIMEOUT_S": 0.5}], indirect=True)
async def test_a_silent_session_is_closed_after_idle_timeout(gateway: Gateway) -> None:
    async with websockets.connect(gateway.url) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000}))
        msgs = await read_until_closed(ws)
    assert [m["type"] for m in msgs] == ["started", "error", "done"]
    assert msgs[1]["code"] == "idle_timeout" and ws.close_code == 1000


@pytest.mark.parametrize("gateway", [{"MAX_SESSION_S": 1.0}], indirect=True)
async def test_every_session_ends_after_max_session_s(gateway: Gateway) -> None:
    async with websockets.connect(gateway.url) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000}))

        async def keep_alive() -> None:
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.send(json.dumps({"op": "keepalive"}))
                    await asyncio.sleep(0.1)

        pinger = asyncio.create_task(keep_alive())
        msgs = await read_until_closed(ws)
        await pinger
    assert [m["type"] for m in msgs] == ["started", "error", "done"]
    assert msgs[1]["code"] == "session_too_long" and ws.close_code == 1000


@pytest.mark.parametrize(
    "gateway",
    [{"decoder": False, "FINAL_TIMEOUT_S": 0.3, "MAX_DELIVERIES": 2, "INTERIM_MIN_MS": 60000}],
    indirect=True,
)
async def test_a_final_without_result_is_requeued_then_fails_by_name(gateway: Gateway, aredis: Any) -> None:
    """No decoder answers: after FINAL_TIMEOUT_S the final is queued again under the same job id;
    after MAX_DELIVERIES tries its utterance gets `final_failed`, never silence, then `done`."""
    speech = conversation([SENTENCES[0]], tail_s=1.5)
    msgs = await run_session(gateway.url, speech.pcm16, speed=8.0)
    check_invariants(msgs)
    [error] = [m for m in msgs if m["type"] == "error"]
    assert error["code"] == "final_failed" and error["utterance"] == 0
    assert "no result after 2 tries" in error["message"]
    queued = [decode_job(fields[keys.JOB_FIELD]).id for _, fields in await aredis.xrange(keys.STREAM_FINAL)]
    # Its id: the final's own, or (speculation) the speculative job's it took at the endpoint.
    assert len(queued) == 2 and queued[0] == queued[1]
    session = msgs[0]["session_id"]
    assert queued[0] == keys.final_job_id(session, 0) or re.fullmatch(re.escape(session) + r":0:s\d+", queued[0])


@pytest.mark.parametrize("gateway", [{"decoder": False, "INTERIM_MIN_MS": 60000}], indirect=True)
async def test_a_failed_final_becomes_an_error_naming_it_and_later_finals_still_come(
    gateway: Gateway, aredis: Any
) -> None:
    """This test plays the decoder: utterance 0's result is an error, utterance 1's is text."""
    speech = conversation(list(SENTENCES[:2]), pause_s=1.2)
    session = asyncio.create_task(run_session(gateway.url, speech.pcm16, speed=8.0))
    channel = keys.results_channel(gateway.settings.GATEWAY_ID)
    answered: set[str] = set()

    async def both_answered() -> bool:
        for _, fields in await aredis.xrange(keys.STREAM_FINAL):
            job = decode_job(fields[keys.JOB_FIELD])
            if job.id in answered:
                continue
            answered.add(job.id)
            result = (
                Result.failure(job, "decode: CUDA failed with error out of memory", "test")
                if job.utt == 0
                else Result.answering(job, text="Please call Stella.")
            )
            await aredis.publish(channel, encode_result(result))
        return len(answered) == 2

    await async_wait_for(both_answered, 30, "two finals to answer")
    msgs = await asyncio.wait_for(session, 30)
    check_invariants(msgs)
    error = next(m for m in msgs if m["type"] == "error")
    assert error["code"] == "final_failed" and error["utterance"] == 0 and "out of memory" in error["message"]
    assert [(f["utterance"], f["text"]) for f in finals(msgs)] == [(1, "Please call Stella.")]
    assert msgs.index(error) < msgs.index(finals(msgs)[0])


async def test_server_closes_1000_after_done_when_client_stays(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client written for the seed reads on after `done` until it times out: the gateway
    waits for it a while (DONE_LINGER_S), then closes with 1000."""
    monkeypatch.setattr(gateway_host, "DONE_LINGER_S", 0.5)
    async with websockets.connect(gateway.url) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "lang": "en"}))
        await ws.send(json.dumps({"op": "stop"}))
        msgs = await read_until_closed(ws, timeout=15)
    assert [m["type"] for m in msgs] == ["started", "done"] and ws.close_code == 1000


async def test_health_status_and_metrics(gateway: Gateway) -> None:
    await run_session(gateway.url, conversation([SENTENCES[0]], tail_s=1.5).pcm16)
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        assert (await http.get("/ready")).json()["ready"] is True

        async def drained() -> Any:
            # The client has its final from the speculative result; the final's own entry, the
            # same job id, is acknowledged by the decoder a moment later.
            status = (await http.get("/status")).json()
            return status if status["queues"] == {"final": 0, "interim": 0, "batch": 0} else None

        status = await async_wait_for(drained, 10, "/status to show the queues empty")
        assert status["decoders"][0]["model"] == gateway.settings.MODEL_NAME
        body = (await http.get("/metrics")).text
    assert "stt_final_latency_seconds_count 1.0" in body
    assert "stt_gateway_sessions 0.0" in body


@pytest.mark.parametrize("gateway", [{"decoder": False}], indirect=True)
async def test_overloaded_cluster_refuses_new_session_with_1013(gateway: Gateway, sredis: Any) -> None:
    for _ in range(gateway.settings.MAX_FINAL_BACKLOG):
        sredis.xadd(keys.STREAM_FINAL, {"job": b"x"})
    async with websockets.connect(gateway.url) as ws:
        await expect_error(ws, "overloaded")
        await read_until_closed(ws)
        assert ws.close_code == 1013


def test_settings_for_tests_are_valid(micro_model: Any) -> None:
    make_settings(micro_model, "redis://127.0.0.1:1/0", PORT=1)
    assert float32_to_pcm16(np.zeros(2, np.float32)) == b"\x00" * 4
