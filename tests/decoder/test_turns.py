"""End-of-turn questions answered by a decoder (decoder/turns.py), on a real Redis with the real
model: a question about a finished sentence and one cut mid-sentence, each answered once with
`eot`; a question past its deadline dropped unanswered; one whose audio is gone answered with
an error, never silence."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from common import keys
from common.lifecycle import StopFlag
from decoder.metrics import DecoderMetrics
from decoder.turns import TurnAnswers
from tests.conftest import async_wait_for
from tests.jobs import ResultCollector, put_job
from tests.realspeech import utterance


async def test_questions_are_answered_once_with_the_models_probability(aredis: aioredis.Redis, turn_model: Any) -> None:
    speech = utterance("1183-124566-0000", tail_s=0.0).audio
    pause = np.zeros(3200, np.float32)
    stop = StopFlag()
    metrics = DecoderMetrics()
    answers = TurnAnswers(aredis, turn_model, "dec-turns", metrics, stop)
    task = asyncio.create_task(answers.run())
    try:
        async with ResultCollector(aredis) as col:
            deadline = int(time.time() * 1000) + 10_000
            done = await put_job(aredis, np.concatenate([speech, pause]), kind="turn", utt=0, deadline=deadline)
            cut = await put_job(
                aredis, np.concatenate([speech[: int(0.93 * 16000)], pause]), kind="turn", utt=1, deadline=deadline
            )
            late = await put_job(aredis, pause, kind="turn", utt=2, deadline=int(time.time() * 1000) - 1)
            gone = await put_job(aredis, None, kind="turn", utt=3, deadline=deadline, audio_end=3200)
            results = {r.id: r for r in await col.wait(3)}
            dropped = metrics.jobs.labels("turn", "stale_dropped")
            await async_wait_for(lambda: dropped._value.get() == 1, 10, "the late question dropped")
            assert len(col.results) == 3 and late.id not in results
        assert (results[done.id].eot or 0.0) >= 0.7
        assert (results[cut.id].eot or 1.0) <= 0.3
        assert results[gone.id].error and results[gone.id].eot is None
        assert all(r.kind == "turn" for r in results.values())
        pending = await aredis.xpending(keys.STREAM_TURN, keys.GROUP)
        assert pending["pending"] == 0
    finally:
        stop.request()
        await asyncio.wait_for(task, 10)
