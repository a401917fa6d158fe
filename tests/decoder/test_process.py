"""Real `stt decoder` processes: SIGKILL recovery, SIGTERM drain, Redis outages."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from common import keys
from common.redis_server import RedisServer
from stt.speech import conversation
from tests.conftest import Proc, async_wait_for, make_settings, settings_env
from tests.jobs import ResultCollector, put_job, stream_state, writes_paused


@pytest.fixture(scope="module")
def long_audio() -> np.ndarray:
    # About 20 s of speech: a final decode of it takes long enough to be caught mid-job.
    return conversation(["The quick brown fox jumps over the lazy dog."] * 6, pause_s=0.3).audio


async def start_decoder(spawn: Callable[..., Proc], r: aioredis.Redis, env: dict[str, str], name: str) -> Proc:
    proc = spawn(["decoder"], {**env, "DECODER_ID": name}, name=name)

    async def alive() -> bool:
        assert proc.popen.poll() is None, proc.output()
        return bool(await r.exists(keys.node_key("decoder", name)))

    await async_wait_for(alive, 60, "decoder %s heartbeat" % name)
    return proc


async def pending_owner(r: aioredis.Redis, stream: str) -> str | None:
    try:
        rows = await r.xpending_range(stream, keys.GROUP, min="-", max="+", count=10)
    except Exception:
        return None
    consumer: Any = rows[0]["consumer"] if rows else None
    return consumer.decode() if consumer else None


async def test_sigkill_mid_final_is_claimed_and_delivered_once(
    spawn: Callable[..., Proc],
    micro_model: Path,
    redis_url: str,
    aredis: aioredis.Redis,
    long_audio: np.ndarray,
) -> None:
    """dec-a takes a final; from then on Redis holds its writes, so whatever it has done when
    SIGKILL comes (decoding, or waiting to deliver) nothing of it reached anyone. dec-b claims the
    idle entry and delivers it, once."""
    env = settings_env(make_settings(micro_model, redis_url, CLAIM_IDLE_MS=1000, FINAL_BEAM=5))
    async with ResultCollector(aredis) as col:
        a = await start_decoder(spawn, aredis, env, "dec-a")
        job = await put_job(aredis, long_audio)
        owner = await async_wait_for(lambda: pending_owner(aredis, keys.STREAM_FINAL), 20, "dec-a to take the job")
        assert owner == "dec-a"
        async with writes_paused(aredis):
            a.signal(signal.SIGKILL)
            assert a.wait(10) == -signal.SIGKILL
        assert col.results == []
        assert not await aredis.exists(keys.result_key(job.id))
        await start_decoder(spawn, aredis, env, "dec-b")
        [result] = await col.wait(1, timeout=60)
        assert result.id == job.id and result.error is None and result.decoder == "dec-b"

        async def drained() -> bool:
            return await stream_state(aredis) == {keys.STREAM_FINAL: (0, 0), keys.STREAM_INTERIM: (0, 0)}

        await async_wait_for(drained, 20, "streams to drain")
        # Nothing is left that could be delivered again.
        await asyncio.sleep(0)
        assert len(col.results) == 1


async def test_sigterm_finishes_the_job_in_hand_and_exits_zero(
    spawn: Callable[..., Proc],
    micro_model: Path,
    redis_url: str,
    aredis: aioredis.Redis,
    long_audio: np.ndarray,
) -> None:
    """SIGTERM while a job is in hand (its delivery held by Redis, so it cannot be done and a
    second one taken before the signal lands): that job is finished and acknowledged, the
    others wait for another decoder, and the process exits 0."""
    env = settings_env(make_settings(micro_model, redis_url, DECODE_BATCH=1))
    async with ResultCollector(aredis) as col:
        proc = await start_decoder(spawn, aredis, env, "dec-t")
        jobs = [await put_job(aredis, long_audio, utt=i) for i in range(3)]
        await async_wait_for(lambda: pending_owner(aredis, keys.STREAM_FINAL), 20, "the decoder to take a job")
        async with writes_paused(aredis):
            proc.signal(signal.SIGTERM)
            await async_wait_for(
                lambda: "stopping" in proc.output() or proc.popen.poll() is not None, 10, "the decoder to see SIGTERM"
            )
        code = await asyncio.to_thread(proc.wait, 30)
        assert code == 0, proc.output()
        await col.wait(1)
        assert [r.id for r in col.results] == [jobs[0].id]
        assert col.results[0].error is None
    # The job in hand was acknowledged; the two not started wait, undelivered, for another decoder.
    assert (await stream_state(aredis))[keys.STREAM_FINAL] == (2, 0)
    assert not await aredis.exists(keys.node_key("decoder", "dec-t"))
    assert "stopped after 1 jobs" in proc.output()


async def test_decoder_survives_redis_restart(
    spawn: Callable[..., Proc], micro_model: Path, private_redis: RedisServer
) -> None:
    r = aioredis.Redis.from_url(private_redis.url)
    env = settings_env(make_settings(micro_model, private_redis.url))
    proc = await start_decoder(spawn, r, env, "dec-r")
    await r.aclose()
    private_redis.stop()
    await async_wait_for(lambda: "Redis unavailable" in proc.output(), 20, "the decoder to notice")
    assert proc.popen.poll() is None
    private_redis.start()  # same socket, same data
    r = aioredis.Redis.from_url(private_redis.url)
    try:
        async with ResultCollector(r) as col:
            await async_wait_for(lambda: r.exists(keys.node_key("decoder", "dec-r")), 30, "heartbeat after restart")
            job = await put_job(r, np.zeros(8000, np.float32) + 0.01)
            [result] = await col.wait(1, timeout=30)
        assert result.id == job.id and result.error is None
        assert proc.popen.poll() is None
    finally:
        await r.aclose()
        proc.stop()
