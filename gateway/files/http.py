"""The HTTP side of file transcription: OpenAI's request fields in, its response formats out."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import logging
import re
from collections.abc import Callable
from typing import Any, Protocol

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.datastructures import UploadFile

from common.errors import SttError
from common.languages import AUTO, WHISPER_LANGUAGES
from common.lifecycle import StopFlag
from common.settings import GatewaySettings
from gateway.core.options import PROMPT_MAX_CHARS
from gateway.files.split import BYTES_PER_S, BadFile, FileReader, decoded
from gateway.files.subtitles import render
from gateway.files.upload import FileTranscription
from gateway.metrics import GatewayMetrics
from gateway.store.jobqueue import JobQueue

logger = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
MB = 1 << 20
DRAIN_MARGIN_S = 2.0  # a draining gateway answers a file this long before its shutdown bound
POLL_S = 0.25  # how often a waiting request looks whether its client left


class FileError(SttError):
    """A request the endpoint refuses: its HTTP status, and what to tell the caller."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        """OpenAI's error shape, which its client turns into a typed exception."""
        return {
            "error": {"message": self.message, "type": "invalid_request_error", "param": self.param, "code": self.code}
        }


class Files(Protocol):
    """Where uploads register to get their results."""

    def add_file(self, file: FileTranscription) -> None: ...

    def remove_file(self, file: FileTranscription) -> None: ...


class FileHost(Protocol):
    """What the endpoint needs of its gateway."""

    settings: GatewaySettings
    id: str
    queue: JobQueue
    metrics: GatewayMetrics
    file_slots: asyncio.Semaphore
    draining: StopFlag
    decoders: list[dict[str, str]]

    @property
    def speakers(self) -> bool: ...

    @property
    def router(self) -> Files: ...


def refusal(err: FileError, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def transcribe_upload(
    request: Request, state: FileHost, on_done: Callable[[float], None] | None = None
) -> Response:
    """POST /v1/audio/transcriptions: multipart `file`, `model` (accepted; the cluster's model
    serves; one ending in `diarize` labels speakers), `language`, `prompt`, `temperature`,
    `response_format` (`diarized_json` labels speakers too), `timestamp_granularities[]`,
    `chunking_strategy` (accepted: the file is cut at pauses anyway). `on_done(audio seconds)`:
    called for a file answered with its transcript (its caller's usage)."""
    settings = state.settings
    limit = settings.MAX_FILE_MB * MB
    try:
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit + MB:
            raise FileError(
                413, "the file is larger than %d MB (MAX_FILE_MB)" % settings.MAX_FILE_MB, "file", "too_large"
            )
        try:
            form = await request.form(max_files=1, max_fields=32)
        except Exception as exc:  # the multipart parser's errors for a malformed body
            raise FileError(400, "the request is not a valid multipart form (%s)" % exc, None) from None
    except FileError as err:
        state.metrics.errors.labels(err.code).inc()
        return refusal(err)
    # The upload's spool file stays open while the file is decoded, a part at a time.
    async with contextlib.aclosing(_Form(form)) as fields:
        try:
            upload = fields.file()
            size = upload.size or 0
            if size > limit:
                raise FileError(
                    413, "the file is larger than %d MB (MAX_FILE_MB)" % settings.MAX_FILE_MB, "file", "too_large"
                )
            if size == 0:
                raise FileError(400, "the file is empty", "file", "empty_file")
            fmt = fields.choice("response_format", FORMATS, "json")
            lang = fields.language()
            prompt = fields.text("prompt", PROMPT_MAX_CHARS)
            fields.temperature()
            words = "word" in fields.all("timestamp_granularities[]") + fields.all("timestamp_granularities")
            if words and fmt != "verbose_json":
                raise FileError(400, "word timestamps need response_format verbose_json", "timestamp_granularities[]")
            fields.text("chunking_strategy", 2000)
            diarize = fmt == "diarized_json" or fields.text("model").endswith("diarize")
            references = known_speakers(fields, diarize)
            if not state.decoders:
                raise FileError(503, "no decoder is running; try again shortly", None, "unavailable")
            if diarize and not state.speakers:
                raise FileError(
                    400,
                    "speaker labels are not served here: no live decoder has the speaker encoder",
                    "response_format",
                    "diarize_unavailable",
                )
        except FileError as err:
            state.metrics.errors.labels(err.code).inc()
            return refusal(err)
        job = FileTranscription(
            settings, state.queue, state.id, lang, prompt, words, diarize=diarize, references=references
        )
        request_id = request.headers.get("x-request-id", "")
        if REQUEST_ID.fullmatch(request_id):
            job.id = "file-" + request_id  # so that a client can follow its file in /status
        return await _run(request, state, job, FileReader(upload.file, settings), fmt, on_done)


async def _run(
    request: Request,
    state: FileHost,
    job: FileTranscription,
    reader: FileReader,
    fmt: str,
    on_done: Callable[[float], None] | None = None,
) -> Response:
    """Decode, cut and queue the file while its results come; answer when every part is in."""
    settings = state.settings
    state.router.add_file(job)
    state.metrics.files.inc()

    async def feed() -> None:
        # At most MAX_FILE_DECODES uploads decode at once on this gateway; the others wait.
        async with state.file_slots:
            await job.feed(reader)

    feeding = asyncio.create_task(feed(), name="file-feed-%s" % job.id)
    finished = asyncio.create_task(job.done.wait(), name="file-done-%s" % job.id)
    loop = asyncio.get_running_loop()
    give_up_at: float | None = None  # once the gateway drains: when the file must be answered
    try:
        while not job.done.is_set():
            await asyncio.wait({feeding, finished}, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
            if feeding.done() and feeding.exception() is not None:
                error = feeding.exception()
                await job.cancel("its file could not be read")
                if isinstance(error, BadFile):
                    state.metrics.errors.labels(error.code).inc()
                    return refusal(FileError(400, error.message, "file", error.code))
                assert error is not None
                raise error
            if job.done.is_set():
                break
            if await request.is_disconnected():
                await job.cancel("its client left")
                return Response(status_code=499)
            if state.draining.requested and settings.SHUTDOWN_TIMEOUT_S > 0:
                # Answered while uvicorn still waits for it, rather than cut off with a 500.
                if give_up_at is None:
                    give_up_at = loop.time() + max(0.0, settings.SHUTDOWN_TIMEOUT_S - DRAIN_MARGIN_S)
                if loop.time() >= give_up_at:
                    await job.cancel("the gateway is stopping")
                    state.metrics.errors.labels("shutting_down").inc()
                    return refusal(
                        FileError(503, "the gateway is shutting down; send the file again", None, "shutting_down"),
                        {"Retry-After": "5"},
                    )
    except RedisError as exc:
        logger.error("file %s: Redis failed: %s", job.id, exc)
        return refusal(FileError(503, "the service lost its queue; try again", None, "unavailable"))
    finally:
        for task in (feeding, finished):
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        state.router.remove_file(job)
        state.metrics.files.dec()
        with contextlib.suppress(RedisError, OSError):
            await job.cleanup()
    if reader.bytes == 0:
        return refusal(FileError(400, "the file holds no audio samples", "file", "empty_file"))
    state.metrics.file_parts.inc(len(job.results))
    failed = [r for r in job.results.values() if r.error]
    if job.failed or failed:
        why = job.failed or "%d of %d parts could not be transcribed" % (len(failed), len(job.jobs))
        return refusal(FileError(502, why, None, "transcription_failed"))
    if on_done is not None:
        on_done(job.duration_s)
    return render(job, fmt)


MAX_KNOWN = 4
KNOWN_S = (1.0, 10.0)


def known_speakers(fields: _Form, diarize: bool) -> list[tuple[str, bytes]]:
    """`known_speaker_names[]` with `known_speaker_references[]` (data URLs of audio clips of
    1-10 s), in pairs, at most 4: each clip as 16 kHz PCM16."""
    names = fields.all("known_speaker_names[]") + fields.all("known_speaker_names")
    refs = fields.all("known_speaker_references[]") + fields.all("known_speaker_references")
    if not names and not refs:
        return []
    param = "known_speaker_references[]"
    if not diarize:
        raise FileError(400, "known speakers need diarization (response_format diarized_json)", "response_format")
    if len(names) != len(refs) or len(names) > MAX_KNOWN or any(not n.strip() or len(n) > 64 for n in names):
        raise FileError(
            400, "give up to %d known_speaker_names[], each with one known_speaker_references[]" % MAX_KNOWN, param
        )
    out = []
    for i, (name, ref) in enumerate(zip(names, refs)):
        head, _, data = ref.partition(",")
        if not (head.startswith("data:") and head.endswith(";base64")):
            raise FileError(
                400, "known_speaker_references[%d] is not a data URL (data:audio/...;base64,...)" % i, param
            )
        try:
            raw = base64.b64decode(data, validate=True)
            pcm = b"".join(decoded(io.BytesIO(raw), KNOWN_S[1]))
        except (binascii.Error, BadFile) as exc:
            raise FileError(
                400,
                "known_speaker_references[%d] is not an audio clip of at most %.0f s (%s)" % (i, KNOWN_S[1], exc),
                param,
            ) from None
        if len(pcm) < KNOWN_S[0] * BYTES_PER_S:
            raise FileError(400, "known_speaker_references[%d] is shorter than %.0f s" % (i, KNOWN_S[0]), param)
        out.append((name.strip(), pcm))
    return out


class _Form:
    """The request's form fields, checked; the upload's spool file is closed at the end."""

    def __init__(self, form: Any) -> None:
        self.form = form

    async def aclose(self) -> None:
        await self.form.close()

    def file(self) -> UploadFile:
        upload = self.form.get("file")
        if not isinstance(upload, UploadFile):
            raise FileError(400, "the form has no file (a multipart field named 'file')", "file", "missing_file")
        return upload

    def text(self, name: str, limit: int = 200) -> str:
        value = self.form.get(name) or ""
        if not isinstance(value, str):
            raise FileError(400, "%s must be text" % name, name)
        if len(value) > limit:
            raise FileError(400, "%s is %d characters; at most %d are taken" % (name, len(value), limit), name)
        return value

    def all(self, name: str) -> list[str]:
        return [v for v in self.form.getlist(name) if isinstance(v, str)]

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.text(name) or default
        if value not in allowed:
            raise FileError(400, "%s %r is not one of %s" % (name, value[:32], ", ".join(allowed)), name)
        return value

    def language(self) -> str | None:
        lang = self.text("language").lower() or AUTO
        if lang != AUTO and lang not in WHISPER_LANGUAGES:
            raise FileError(400, "language %r is not a Whisper language code" % lang[:32], "language")
        return None if lang == AUTO else lang

    def temperature(self) -> float:
        raw = self.text("temperature") or "0"
        try:
            value = float(raw)
        except ValueError:
            raise FileError(400, "temperature must be a number", "temperature") from None
        if not 0.0 <= value <= 1.0:
            raise FileError(400, "temperature must be between 0 and 1", "temperature")
        return value
