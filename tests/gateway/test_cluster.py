"""The gateway and decoders as real `stt` processes: what only processes can show (a decoder that
stops and another that takes over, a gateway frozen while its subscription is killed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from common import keys
from common.messages import decode_job
from stt.speech import SENTENCES, conversation
from tests.conftest import async_wait_for
from tests.gateway.conftest import Cluster
from tests.gateway.wsclient import check_invariants, finals, run_session


async def stop_decoder(cluster: Cluster) -> None:
    cluster.decoder.signal(signal.SIGTERM)
    assert await asyncio.to_thread(cluster.decoder.wait, 30) == 0


async def test_decoder_stopped_then_restarted_final_arrives_once(cluster: Cluster, spawn: Any, aredis: Any) -> None:
    speech = conversation([SENTENCES[0]], tail_s=1.5)
    # The session starts while the decoder runs; then the decoder stops: nobody takes the final.
    task = asyncio.create_task(
        run_session(cluster.url, speech.pcm16, start={"interim": False}, after_start=lambda: stop_decoder(cluster))
    )
    await async_wait_for(lambda: aredis.xlen(keys.STREAM_FINAL), 30, "the final to be queued")
    spawn(["decoder"], {**cluster.env, "DECODER_ID": "dec-2"}, name="decoder2")
    msgs = await asyncio.wait_for(task, 60)
    check_invariants(msgs)
    assert len(finals(msgs)) == 1


@pytest.mark.parametrize("cluster", [{"FINAL_TIMEOUT_S": 60.0}], indirect=True)
async def test_result_lost_while_resubscribing_is_answered_from_the_cache(
    cluster: Cluster, spawn: Any, aredis: Any
) -> None:
    """The gateway's subscription drops, and the decoder publishes the final to nobody meanwhile.
    On resubscribing the gateway re-queues it; the decoder answers from its result cache (no
    second decode) long before FINAL_TIMEOUT_S would have re-queued it."""
    speech = conversation([SENTENCES[0]], tail_s=1.5)
    task = asyncio.create_task(
        run_session(cluster.url, speech.pcm16, start={"interim": False}, after_start=lambda: stop_decoder(cluster))
    )
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


def rss_mb(pid: int) -> float:
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS for %d" % pid)


async def test_a_client_that_never_reads_is_closed_and_costs_the_gateway_nothing(cluster: Cluster) -> None:
    """A client sends 150 messages of 1 MB, each a bad op, and reads nothing. Each gets a short
    error; past 100 errors the connection is closed; the gateway's memory stays where it was."""
    before = rss_mb(cluster.gateway.pid)
    bad = json.dumps({"op": "x" * 1_000_000})
    async with websockets.connect(cluster.url, max_size=2**23, max_queue=1) as ws:

        async def pour() -> int:
            sent = 0
            with contextlib.suppress(ConnectionClosed):
                for _ in range(150):
                    await ws.send(bad)
                    sent += 1
            return sent

        sender = asyncio.create_task(pour())
        # This client reads nothing, so it would notice the dropped socket only at its own ping
        # timeout: the gateway's word is what counts.
        await async_wait_for(lambda: "dropping a connection" in cluster.gateway.output(), 30, "the socket dropped")
        sent = await asyncio.wait_for(sender, 30)
        after = rss_mb(cluster.gateway.pid)
        ws.transport.abort()
    print("gateway RSS %.1f MB before, %.1f MB after %d MB poured unread" % (before, after, sent))  # (-s)
    assert "more than 100 errors" in cluster.gateway.output()
    assert after - before < 40, "gateway grew from %.0f MB to %.0f MB" % (before, after)


@pytest.mark.parametrize("cluster", [{"API_KEY": "secret-key-0123456789"}], indirect=True)
async def test_an_api_key_never_appears_in_a_log_line(cluster: Cluster) -> None:
    async with websockets.connect(cluster.url + "?token=secret-key-0123456789") as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000}))
        assert json.loads(await ws.recv())["type"] == "started"
        await ws.send(json.dumps({"op": "stop"}))
        async for raw in ws:
            if json.loads(raw)["type"] == "done":
                break
    await async_wait_for(lambda: "token=***" in cluster.gateway.output(), 10, "the connection to be logged")
    assert "secret-key-0123456789" not in cluster.gateway.output() + cluster.decoder.output()
