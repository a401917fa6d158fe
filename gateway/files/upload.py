"""File transcription: one uploaded file in flight (`POST /v1/audio/transcriptions`).

The upload is spooled to disk by the multipart parser (never held whole in memory) and read as
a stream (gateway/files/split.py): parts are queued as they are cut, at most PARTS_AHEAD of them
waiting for their results at a time, so neither the gateway nor Redis holds more than a few
parts of a file of any length. Each part's audio is stored like an utterance's and one job per
part goes on `stt:jobs:batch`; decoders take those after live finals, sharing their background
lane with interims (decoder/worker.py). Results come back on this gateway's channel and are put
in order; times are relative to the file.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common import keys
from common.messages import Job, JobKind, Result
from common.settings import GatewaySettings
from gateway.files.split import BYTES_PER_S, FileReader, Part
from gateway.store.jobqueue import JobQueue

logger = logging.getLogger(__name__)

PARTS_AHEAD = 8  # parts of one file queued and not yet answered, at most
REFERENCE_UTT = 1_000_000  # known speakers' clips are numbered from here (a file's parts from 0)


@dataclass
class FileTranscription:
    """One uploaded file in flight: its parts' jobs, and their results as they come."""

    settings: GatewaySettings
    queue: JobQueue
    gateway_id: str
    lang: str | None
    prompt: str
    words: bool
    diarize: bool = False  # label each segment's speaker (over the whole file)
    # Known speakers: (name, 16 kHz PCM16 of a clip of their voice), decoded beside the file's
    # parts for their voices (a cluster that sounds like one is called by its name).
    references: list[tuple[str, bytes]] = field(default_factory=list)
    ref_jobs: dict[str, Job] = field(default_factory=dict)
    ref_results: dict[str, Result] = field(default_factory=dict)
    id: str = field(default_factory=lambda: "file-" + uuid.uuid4().hex[:16])
    parts: list[tuple[int, int]] = field(default_factory=list)  # cut so far
    jobs: list[Job] = field(default_factory=list)
    results: dict[int, Result] = field(default_factory=dict)
    entry_ids: dict[int, str] = field(default_factory=dict)
    duration_s: float = 0.0  # of the audio decoded so far (the whole file, once cut)
    cut: asyncio.Event = field(default_factory=asyncio.Event)  # the whole file is decoded and cut
    done: asyncio.Event = field(default_factory=asyncio.Event)  # cut, and every part answered
    answered: asyncio.Event = field(default_factory=asyncio.Event)  # a part was answered
    failed: str | None = None
    started: float = field(default_factory=time.time)

    @property
    def audio_s(self) -> float:
        return sum(end - start for start, end in self.parts) / BYTES_PER_S

    @property
    def waiting(self) -> int:
        return len(self.jobs) - len(self.results)

    async def feed(self, reader: FileReader) -> None:
        """Decode and cut the file, queueing each part as it comes; returns once the whole file
        is cut (BadFile from the reader: the file is unreadable, or too long)."""
        for i, (_name, pcm) in enumerate(self.references):
            await self._submit_reference(i, pcm)
        while not reader.finished:
            while self.waiting >= PARTS_AHEAD:
                self.answered.clear()
                await self.answered.wait()
            for part in await asyncio.to_thread(reader.step):
                await self._submit(part)
            self.duration_s = reader.bytes / BYTES_PER_S
        self.cut.set()
        self._check_done()
        logger.info(
            "file %s: %.1f s decoded, %d parts (%.1f s of speech)",
            self.id,
            self.duration_s,
            len(self.parts),
            self.audio_s,
        )

    async def _submit(self, part: Part) -> None:
        n = len(self.parts)
        self.parts.append((part.start, part.end))
        await self.queue.append_audio(self.id, n, part.pcm, 0)
        job = Job(
            id="%s-%d" % (self.id, n),
            kind=JobKind.BATCH,
            session=self.id,
            gateway=self.gateway_id,
            utt=n,
            audio_key=keys.audio_key(self.id, n),
            audio_end=part.end - part.start,
            t0=part.start / BYTES_PER_S,
            lang=self.lang,
            prompt=self.prompt,
            word_timestamps=self.words,
            speakers=self.diarize,
        )
        self.jobs.append(job)
        self.entry_ids[n] = await self.queue.enqueue(job)

    async def _submit_reference(self, i: int, pcm: bytes) -> None:
        n = REFERENCE_UTT + i
        await self.queue.append_audio(self.id, n, pcm, 0)
        job = Job(
            id="%s-ref-%d" % (self.id, i),
            kind=JobKind.BATCH,
            session=self.id,
            gateway=self.gateway_id,
            utt=n,
            audio_key=keys.audio_key(self.id, n),
            audio_end=len(pcm),
            lang=self.lang,
            speakers=True,
        )
        self.ref_jobs[job.id] = job
        self.entry_ids[n] = await self.queue.enqueue(job)

    def reference_voices(self) -> list[tuple[str, np.ndarray]]:
        """Each known speaker's voice: the mean of its clip's segments' embeddings."""
        out = []
        for i, (name, _) in enumerate(self.references):
            r = self.ref_results.get("%s-ref-%d" % (self.id, i))
            if r is None:
                continue
            voices = [s["voice"] for s in r.segments or [] if s.get("voice")] or ([r.voice] if r.voice else [])
            if voices:
                out.append((name, np.mean(np.asarray(voices, dtype=np.float32), axis=0)))
        return out

    def _check_done(self) -> None:
        if self.cut.is_set() and len(self.results) == len(self.jobs) and len(self.ref_results) == len(self.ref_jobs):
            self.done.set()

    # --- what the result router calls ------------------------------------------------------

    def on_result(self, result: Result) -> None:
        if result.id in self.ref_jobs:
            if result.error:
                logger.error("file %s: a known speaker's clip failed: %s", self.id, result.error)
            self.ref_results[result.id] = result
            self._check_done()
            return
        if result.utt >= len(self.jobs) or result.id != self.jobs[result.utt].id or result.utt in self.results:
            return
        if result.error:
            logger.error("file %s part %d failed: %s", self.id, result.utt, result.error)
        self.results[result.utt] = result
        self.answered.set()
        self._check_done()

    async def requeue_pending(self) -> None:
        """After a lost result channel: the same jobs again (the decoders' cache answers those done)."""
        for job in self.jobs:
            if job.utt not in self.results:
                self.entry_ids[job.utt] = await self.queue.enqueue(job)
        for job in self.ref_jobs.values():
            if job.id not in self.ref_results:
                self.entry_ids[job.utt] = await self.queue.enqueue(job)

    def abandon(self, why: str) -> None:
        self.failed = why
        self.done.set()

    async def cancel(self, why: str) -> None:
        """Given up (its client left, the gateway stops, the file turned out bad): its parts not
        yet taken are deleted, with all the audio."""
        done = set(self.results) | {self.ref_jobs[i].utt for i in self.ref_results}
        waiting = [self.entry_ids[n] for n in self.entry_ids if n not in done]
        if waiting:
            await self.queue.redis.xdel(keys.STREAM_BATCH, *waiting)
        await self.cleanup()
        logger.info("file %s cancelled: %s (%d parts undone)", self.id, why, len(waiting))

    async def cleanup(self) -> None:
        refs = range(REFERENCE_UTT, REFERENCE_UTT + len(self.references))
        await self.queue.drop_audio(self.id, *range(len(self.parts)), *refs)

    def progress(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parts": len(self.parts),
            "done": len(self.results),
            "cut": self.cut.is_set(),
            "decoded_s": round(self.duration_s, 1),
            "speech_s": round(self.audio_s, 1),
            "elapsed_s": round(time.time() - self.started, 1),
        }
