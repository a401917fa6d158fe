"""File transcription: `POST /v1/audio/transcriptions`, compatible with OpenAI's.

The upload is spooled to disk by the multipart parser (never held whole in memory), decoded by
PyAV to 16 kHz mono, and cut by the gateway's own endpointer (WebRTC VAD) into spans of speech,
which are joined into parts of at most FILE_PART_S (pauses inside a part stay: the model hears
sentences in their context, as in a whole-file decode). Each part's audio is stored like
an utterance's and one job per part goes on `stt:jobs:batch`; decoders take those after live
finals, sharing their background lane with interims (decoder/worker.py). Results come back on
this gateway's channel and are put in order; times are relative to the file.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from common import keys
from common.errors import SttError
from common.messages import BATCH, Job, Result
from common.settings import Settings
from gateway.jobqueue import JobQueue
from gateway.vad import Endpointer

logger = logging.getLogger(__name__)

RATE = 16000
BYTES_PER_S = RATE * 2
SPAN_PAD_S = 0.2  # audio kept after a span's end of speech


class BadFile(SttError):
    """An upload that cannot be transcribed: `code` says why (invalid_file, empty_file, …)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def decode_file(fileobj: BinaryIO) -> bytes:
    """Any container and codec PyAV (FFmpeg) reads, any rate and channels, as 16 kHz mono PCM16."""
    import av

    out: list[bytes] = []
    try:
        with av.open(fileobj, mode="r", metadata_errors="ignore") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise BadFile("invalid_file", "the file holds no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            for frame in container.decode(stream):
                assert isinstance(frame, av.AudioFrame)
                out.extend(f.to_ndarray().tobytes() for f in resampler.resample(frame))
            out.extend(f.to_ndarray().tobytes() for f in resampler.resample(None))
    except BadFile:
        raise
    except Exception as exc:  # FFmpeg's errors for unknown, corrupt or truncated input
        raise BadFile("invalid_file", "the file could not be read as audio (%s)" % type(exc).__name__) from None
    return b"".join(out)


def speech_parts(pcm: bytes, settings: Settings) -> list[tuple[int, int]]:
    """(start, end) byte offsets of the parts to decode: the endpointer's spans of speech (each at
    most MAX_UTTERANCE_S), joined while a part stays within FILE_PART_S."""
    ep = Endpointer(
        settings.VAD_MODE,
        settings.PRE_ROLL_MS,
        settings.MIN_SPEECH_MS,
        settings.FINAL_SILENCE_MS_MIN,
        settings.FINAL_SILENCE_MS_MAX,
        settings.MAX_UTTERANCE_S,
    )
    spans: list[list[int]] = []
    step = BYTES_PER_S  # fed a second at a time, as a session would be
    events = [ev for i in range(0, len(pcm), step) for ev in ep.feed(pcm[i : i + step])] + ep.force_end()
    for ev in events:
        if ev.kind == "start":
            spans.append([ev.sample * 2, len(pcm)])
        elif ev.kind == "end" and spans:
            spans[-1][1] = min(len(pcm), (ev.sample + int(SPAN_PAD_S * RATE)) * 2)
    join = int(min(settings.FILE_PART_S, settings.MAX_UTTERANCE_S) * BYTES_PER_S)
    limit = int(settings.MAX_UTTERANCE_S * BYTES_PER_S)
    parts: list[tuple[int, int]] = []
    for start, end in spans:
        if parts and end - parts[-1][0] <= join:
            parts[-1] = (parts[-1][0], end)
        else:
            parts.append((start, min(end, start + limit)))
    return parts


@dataclass
class FileTranscription:
    """One uploaded file in flight: its parts' jobs, and their results as they come."""

    settings: Settings
    queue: JobQueue
    gateway_id: str
    parts: list[tuple[int, int]]
    lang: str | None
    prompt: str
    words: bool
    duration_s: float  # of the whole file
    id: str = field(default_factory=lambda: "file-" + uuid.uuid4().hex[:16])
    jobs: list[Job] = field(default_factory=list)
    results: dict[int, Result] = field(default_factory=dict)
    entry_ids: dict[int, str] = field(default_factory=dict)
    failed: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.time)

    @property
    def audio_s(self) -> float:
        return sum(end - start for start, end in self.parts) / BYTES_PER_S

    async def submit(self, pcm: bytes) -> None:
        for n, (start, end) in enumerate(self.parts):
            await self.queue.append_audio(self.id, n, pcm[start:end], 0)
            job = Job(
                id="%s-%d" % (self.id, n),
                kind=BATCH,
                session=self.id,
                gateway=self.gateway_id,
                utt=n,
                audio_key=keys.audio_key(self.id, n),
                audio_end=end - start,
                t0=start / BYTES_PER_S,
                lang=self.lang,
                prompt=self.prompt,
                word_timestamps=self.words,
            )
            self.jobs.append(job)
            self.entry_ids[n] = await self.queue.enqueue(job)
        if not self.parts:
            self.done.set()
        logger.info("file %s: %d parts queued (%.1f s of speech)", self.id, len(self.parts), self.audio_s)

    # --- what the result router and the gateway's tick call ----------------------------------

    def on_result(self, result: Result) -> None:
        if result.utt >= len(self.jobs) or result.id != self.jobs[result.utt].id or result.utt in self.results:
            return
        if result.error:
            logger.error("file %s part %d failed: %s", self.id, result.utt, result.error)
        self.results[result.utt] = result
        if len(self.results) == len(self.jobs):
            self.done.set()

    async def requeue_pending(self) -> None:
        """After a lost result channel: the same jobs again (the decoders' cache answers those done)."""
        for job in self.jobs:
            if job.utt not in self.results:
                self.entry_ids[job.utt] = await self.queue.enqueue(job)

    def abandon(self, why: str) -> None:
        self.failed = why
        self.done.set()

    async def cancel(self, why: str) -> None:
        """Given up (its client left, the gateway stops): its parts not yet taken are deleted,
        with all the audio."""
        waiting = [self.entry_ids[n] for n in self.entry_ids if n not in self.results]
        if waiting:
            await self.queue.redis.xdel(keys.STREAM_BATCH, *waiting)
        await self.cleanup()
        logger.info("file %s cancelled: %s (%d parts undone)", self.id, why, len(waiting))

    async def cleanup(self) -> None:
        await self.queue.drop_audio(self.id, *range(len(self.parts)))

    def progress(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parts": len(self.parts),
            "done": len(self.results),
            "speech_s": round(self.audio_s, 1),
            "elapsed_s": round(time.time() - self.started, 1),
        }
