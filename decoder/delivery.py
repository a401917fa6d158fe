"""How a decoder runs a list of jobs and delivers each result (a part of decoder/worker.py's
DecoderWorker): the decode off the event loop, each job's result delivered as soon as it is done,
its entries kept claimed and its final's decoding lease renewed while it runs, and a device's
failure told apart from the job's (decoder/breaker.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from common.clock import now_ms
from common.errors import DecodeError
from common.lifecycle import StopFlag
from common.messages import Job, JobKind, Result
from common.settings import DecoderSettings
from decoder.breaker import DeviceBreaker, Verdict
from decoder.engine import Engine
from decoder.gate import LEASE_MS
from decoder.metrics import DecoderMetrics
from decoder.output import DecodeOutput
from decoder.scheduler import Lane
from decoder.streams import BadEntry, Entry, JobStreams

logger = logging.getLogger(__name__)


class Delivery:
    settings: DecoderSettings
    engine: Engine
    metrics: DecoderMetrics
    streams: JobStreams
    breaker: DeviceBreaker
    stop: StopFlag
    id: str
    _executors: dict[Lane, ThreadPoolExecutor]

    def _count(self, entries: Sequence[Entry | BadEntry], outcome: str, kind: JobKind | None = None) -> None:
        raise NotImplementedError

    async def _decode(
        self, ready: list[tuple[Entry, np.ndarray, np.ndarray | None, np.ndarray | None]], kind: JobKind
    ) -> None:
        """Decode `ready` together, delivering each job's result as soon as it is done."""
        started_ms = now_ms()
        items: list[tuple[Job, np.ndarray]] = [(e.job, a) for e, a, _, _ in ready]
        contexts = [c for _, _, c, _ in ready]
        afters = [after for _, _, _, after in ready]
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        finished: asyncio.Queue[tuple[int, DecodeOutput | DecodeError]] = asyncio.Queue()

        def on_each(i: int, output: DecodeOutput | DecodeError) -> None:
            loop.call_soon_threadsafe(finished.put_nowait, (i, output))

        async def deliver_each() -> None:
            for _ in ready:
                i, output = await finished.get()
                entry = ready[i][0]
                if self._device_failed(entry, output):
                    continue
                await self.streams.deliver(
                    [(entry, self._answer(entry, output, started_ms))], self.settings.RESULT_TTL_S
                )

        executor = self._executors[Lane.FINAL if kind.decodes_as_final else Lane.BACKGROUND]
        decoding = loop.run_in_executor(executor, self.engine.decode_many, items, contexts, afters, on_each)
        delivering = asyncio.ensure_future(deliver_each())
        try:
            await asyncio.gather(decoding, self._keep_claimed([e for e, _, _, _ in ready], decoding))
            # Every job's output was queued (on_each) before decode_many returned.
            await delivering
        finally:
            if not delivering.done():
                delivering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await delivering
        self.metrics.decode_seconds.labels(kind).observe(time.perf_counter() - t0)
        self.metrics.batch_size.labels(kind).observe(len(items))

    def _device_failed(self, entry: Entry, output: DecodeOutput | DecodeError) -> bool:
        """Whether `output` is the device's failure rather than the job's (decoder/breaker.py):
        the job is then left unacknowledged for another decoder, and the decoder stops when
        the device fails job after job."""
        verdict = self.breaker.record(str(output) if isinstance(output, DecodeError) else None)
        if verdict is Verdict.OK:
            return False
        job = entry.job
        logger.error(
            "job %s (session %s utt %d): device error, left to another decoder: %s",
            job.id,
            job.session,
            job.utt,
            output,
        )
        self._count([entry], "device_error")
        if verdict is Verdict.TRIP and not self.stop.requested:
            logger.error("decoder %s stops: %s; its jobs go to the others", self.id, self.breaker.tripped)
            self.stop.request()
        return True

    def _answer(self, entry: Entry, output: DecodeOutput | DecodeError, started_ms: float) -> Result:
        job = entry.job
        queue_ms = max(0.0, started_ms - job.enqueued) if job.enqueued else 0.0
        self.metrics.queue_wait.labels(job.kind).observe(queue_ms / 1000.0)
        if isinstance(output, DecodeError):
            logger.error("job %s (session %s utt %d) failed to decode: %s", job.id, job.session, job.utt, output)
            self._count([entry], "failed")
            return Result.failure(job, "decode: %s" % output, self.id)
        if output.audio_s > 0:
            self.metrics.rtf.labels(job.kind).observe(output.decode_ms / 1000.0 / output.audio_s)
        self._count([entry], "done")
        logger.debug("job %s (session %s utt %d) decoded in %.0f ms", job.id, job.session, job.utt, output.decode_ms)
        return output.answering(job, queue_ms, self.id)

    async def _keep_claimed(self, entries: list[Entry], decoding: asyncio.Future[Any]) -> None:
        """While a decode runs: keep its entries ours, well within CLAIM_IDLE_MS, and the
        decoding leases of final-lane jobs."""
        leased = [e.job for e in entries if e.kind.decodes_as_final]
        period = max(0.05, min(self.settings.CLAIM_IDLE_MS / 3000, LEASE_MS / 3000 if leased else 60.0))
        claimed_at = time.monotonic()
        while not decoding.done():
            await asyncio.wait({decoding}, timeout=period)
            if decoding.done():
                return
            try:
                if leased:
                    await self.streams.renew_leases(leased, LEASE_MS)
                if time.monotonic() - claimed_at >= self.settings.CLAIM_IDLE_MS / 3000:
                    claimed_at = time.monotonic()
                    await self.streams.keep_claimed(entries)
            except RedisError as exc:
                logger.warning("could not keep %d entries claimed: %s", len(entries), exc)
