"""End-of-turn questions: a decoder's second, small consumer loop beside its decodes.

A gateway whose session uses the end-of-turn model asks, at a short pause, whether the speaker
has finished (a `turn` job naming the utterance's audio up to the pause). The answer is one
run of the smart-turn model (decoder/turnmodel.py) on the last 8 s of that audio, ~20-50 ms
on a CPU core, published as a result with `eot`. Questions have their own stream and their own
thread, so they never wait behind a decode, nor a decode behind them; one past its deadline is
dropped (the gateway has gone on by then: its endpointer ends the turn on silence). Nothing is
cached or claimed: a question lost with its decoder is a turn that ends on silence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from common import keys
from common.audio import pcm16_to_float32
from common.clock import now_ms
from common.errors import SchemaError
from common.lifecycle import REDIS_TRANSIENT, StopFlag
from common.messages import Job, Result, decode_job, encode_result
from common.process import lower_thread_priority
from common.settings import DecoderSettings
from decoder.metrics import DecoderMetrics
from decoder.turnmodel import SAMPLES, TurnModel, model_path

logger = logging.getLogger(__name__)

READ = 1  # questions read at once: one, so that a burst of them spreads over the decoders
BLOCK_MS = 500


def load_turn_model(settings: DecoderSettings) -> TurnModel | None:
    """The end-of-turn model, or None (one warning: turns then end on silence alone)."""
    path = model_path(settings.TURN_MODEL)
    if not path.is_file():
        logger.warning(
            "no end-of-turn model at %s (fetch it: python -m stt.turnfile): turns end on silence alone", path
        )
        return None
    try:
        return TurnModel.load(path)
    except Exception as exc:  # onnxruntime's errors for a corrupt or foreign file
        logger.warning("the end-of-turn model %s cannot be loaded (%s): turns end on silence alone", path, exc)
        return None


def lower_priority(nice: int) -> None:
    """The model's thread at `nice` (a ThreadPoolExecutor initializer)."""
    if not lower_thread_priority(nice):
        logger.warning("cannot lower the end-of-turn model's priority; it runs at the decodes'")


class TurnAnswers:
    def __init__(
        self,
        redis: aioredis.Redis,
        model: TurnModel,
        consumer: str,
        metrics: DecoderMetrics,
        stop: StopFlag,
        nice: int = 0,
    ) -> None:
        self.redis = redis
        self.model = model
        self.consumer = consumer
        self.metrics = metrics
        self.stop = stop
        # On a CPU the model's runs take the cores a decode needs; at `nice` they take only what
        # the decodes leave (an idle core at light load: no later), and under load the answer
        # comes late and the silence rule ends the turn instead of slowing every decode.
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="turns", initializer=lower_priority, initargs=(nice,)
        )
        self.answered = 0

    async def run(self) -> None:
        try:
            while not self.stop.requested:
                try:
                    await self._ensure_group()
                    await self._turn()
                except REDIS_TRANSIENT as exc:
                    logger.warning("end-of-turn questions: Redis unavailable (%s); retrying", exc)
                    await self.stop.sleep(1.0)
        finally:
            self.executor.shutdown(wait=True)

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(keys.STREAM_TURN, keys.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _turn(self) -> None:
        reply: Any = await self.redis.xreadgroup(
            keys.GROUP, self.consumer, {keys.STREAM_TURN: ">"}, count=READ, block=BLOCK_MS
        )
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                await self._answer(entry_id, fields)

    async def _answer(self, entry_id: Any, fields: dict[bytes, bytes]) -> None:
        try:
            job = decode_job(fields[keys.JOB_FIELD])
        except (SchemaError, KeyError) as exc:
            logger.error("unreadable end-of-turn question %s: %s", entry_id, exc)
            await self.redis.xack(keys.STREAM_TURN, keys.GROUP, entry_id)
            return
        if job.deadline and job.deadline < now_ms():
            await self.redis.xack(keys.STREAM_TURN, keys.GROUP, entry_id)
            self.metrics.jobs.labels(job.kind, "stale_dropped").inc()
            return
        started = time.perf_counter()
        first = max(0, job.audio_end - SAMPLES * 2)
        pcm: bytes = await self.redis.getrange(job.audio_key, first, max(first, job.audio_end - 1))  # type: ignore[assignment]
        result = await self._judge(job, pcm or b"")
        result.decode_ms = round((time.perf_counter() - started) * 1000.0, 1)
        result.queue_ms = max(0.0, now_ms() - job.enqueued) if job.enqueued else 0.0
        pipe = self.redis.pipeline(transaction=False)
        pipe.publish(keys.results_channel(job.gateway), encode_result(result))
        pipe.xack(keys.STREAM_TURN, keys.GROUP, entry_id)
        pipe.xdel(keys.STREAM_TURN, entry_id)
        await pipe.execute()
        self.metrics.jobs.labels(job.kind, "failed" if result.error else "done").inc()
        self.metrics.decode_seconds.labels(job.kind).observe(result.decode_ms / 1000.0)
        self.answered += 1
        logger.debug(
            "job %s (session %s utt %d): end of turn %s in %.0f ms, %.0f ms after it was asked",
            job.id,
            job.session,
            job.utt,
            result.eot,
            result.decode_ms,
            result.queue_ms,
        )

    async def _judge(self, job: Job, pcm: bytes) -> Result:
        if len(pcm) < 2:
            return Result.failure(job, "audio: %s is missing" % job.audio_key, self.consumer)
        audio = pcm16_to_float32(pcm[: len(pcm) // 2 * 2])
        loop = asyncio.get_running_loop()
        try:
            eot = await loop.run_in_executor(self.executor, self.model.probability, audio)
        except Exception as exc:
            logger.error("end-of-turn model failed on %s: %s", job.id, exc)
            return Result.failure(job, "eot: %s" % type(exc).__name__, self.consumer)
        return Result.answering(job, eot=round(eot, 4), audio_s=round(len(audio) / 16000, 3), decoder=self.consumer)
