"""The HTTP side of file transcription: OpenAI's request fields in, its response formats out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from redis.exceptions import RedisError
from starlette.datastructures import UploadFile

from common.errors import SttError
from common.languages import AUTO, WHISPER_LANGUAGES
from gateway.files import BYTES_PER_S, BadFile, FileTranscription, decode_file, speech_parts
from gateway.options import PROMPT_MAX_CHARS
from gateway.state import GatewayState

logger = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
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


def refusal(err: FileError, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def transcribe_upload(request: Request, state: GatewayState) -> Response:
    """POST /v1/audio/transcriptions: multipart `file`, `model` (accepted; the cluster's model
    serves), `language`, `prompt`, `temperature`, `response_format`, `timestamp_granularities[]`."""
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
        async with contextlib.aclosing(_Form(form)) as fields:
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
            if not state.decoders:
                raise FileError(503, "no decoder is running; try again shortly", None, "unavailable")
            try:
                pcm = await asyncio.to_thread(decode_file, upload.file)
            except BadFile as bad:
                raise FileError(400, bad.message, "file", bad.code) from None
        if not pcm:
            raise FileError(400, "the file holds no audio samples", "file", "empty_file")
        parts = await asyncio.to_thread(speech_parts, pcm, settings)
    except FileError as err:
        state.metrics.errors.labels(err.code).inc()
        return refusal(err)
    job = FileTranscription(settings, state.queue, state.id, parts, lang, prompt, words, len(pcm) / BYTES_PER_S)
    request_id = request.headers.get("x-request-id", "")
    if REQUEST_ID.fullmatch(request_id):
        job.id = "file-" + request_id  # so that a client can follow its file in /status
    state.router.add_file(job)
    state.metrics.files.inc()
    loop = asyncio.get_running_loop()
    give_up_at: float | None = None  # once the gateway drains: when the file must be answered
    try:
        await job.submit(pcm)
        del pcm
        while not job.done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.done.wait(), POLL_S)
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
        state.router.remove_file(job)
        state.metrics.files.dec()
        with contextlib.suppress(RedisError, OSError):
            await job.cleanup()
    state.metrics.file_parts.inc(len(job.results))
    failed = [r for r in job.results.values() if r.error]
    if job.failed or failed:
        why = job.failed or "%d of %d parts could not be transcribed" % (len(failed), len(job.jobs))
        return refusal(FileError(502, why, None, "transcription_failed"))
    return render(job, fmt)


def render(job: FileTranscription, fmt: str) -> Response:
    """The finished file in the asked format; a segment per part that holds speech."""
    segments: list[dict[str, Any]] = []
    for n, (start, end) in enumerate(job.parts):
        r = job.results[n]
        text = r.text.strip()
        if text:
            segments.append(
                {
                    "id": len(segments),
                    "start": round(start / BYTES_PER_S, 3),
                    "end": round(end / BYTES_PER_S, 3),
                    "text": text,
                    "words": r.words or [],
                }
            )
    text = " ".join(s["text"] for s in segments)
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt == "srt":
        return PlainTextResponse(subtitles(segments, ","), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse("WEBVTT\n\n" + subtitles(segments, "."), media_type="text/vtt")
    if fmt == "json":
        return JSONResponse({"text": text})
    language = next((r.language for r in job.results.values() if r.language), job.lang or "en")
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language,
        "duration": round(job.duration_s, 3),
        "text": text,
        "segments": [
            {
                "id": s["id"],
                "seek": 0,
                "start": s["start"],
                "end": s["end"],
                "text": s["text"],
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for s in segments
        ],
    }
    if job.words:
        body["words"] = [
            {"word": w["word"].strip(), "start": w["start"], "end": w["end"]} for s in segments for w in s["words"]
        ]
    return JSONResponse(body)


def timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    return "%02d:%02d:%02d%s%03d" % (ms // 3_600_000, ms // 60_000 % 60, ms // 1000 % 60, sep, ms % 1000)


def subtitles(segments: list[dict[str, Any]], sep: str) -> str:
    """SRT (sep ",", numbered cues) or the body of WebVTT (sep ".")."""
    cues = []
    for i, s in enumerate(segments, 1):
        head = "%d\n" % i if sep == "," else ""
        cues.append("%s%s --> %s\n%s\n" % (head, timestamp(s["start"], sep), timestamp(s["end"], sep), s["text"]))
    return "\n".join(cues)


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
