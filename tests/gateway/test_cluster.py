"""The gateway and decoders as real `stt` processes: what only processes can show (a decoder that
stops and another that takes over, a gateway frozen while its subscription is killed)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from client.speech import SENTENCES, conversation
from common import keys
from common.messages import decode_job
from tests.conftest import async_wait_for
from tests.gateway.conftest import Cluster
from tests.gateway.wsclient import check_invariants, finals, run_session


async def test_decoder_stopped_then_restarted_final_arrives_once(cluster: Cluster, spawn: Any, aredis: Any) -> None:
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
async def test_result_lost_while_resubscribing_is_answered_from_the_cache(
    cluster: Cluster, spawn: Any, aredis: Any
) -> None:
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
