"""Every wire schema: decode jobs and results (msgpack, version 1) and the client protocol.

A job or result whose version is missing, wrong or unknown is a `SchemaError` naming what is
wrong; it never reaches the model or a client half-read.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import msgpack

from common.errors import SchemaError
from common.languages import AUTO, WHISPER_LANGUAGES

SCHEMA_VERSION = 1
KINDS = ("final", "interim")  # live work; each has its own decode lane
BATCH = "batch"  # one utterance of an uploaded file (POST /v1/audio/transcriptions)
JOB_KINDS = (*KINDS, BATCH)
TASKS = ("transcribe", "translate")


@dataclass
class Job:
    id: str
    kind: str
    session: str
    gateway: str
    utt: int
    audio_key: str
    audio_end: int
    rev: int = 0
    t0: float = 0.0
    lang: str | None = None
    task: str = "transcribe"
    prompt: str = ""
    prefix: str = ""
    word_timestamps: bool = False
    enqueued: int = 0
    deadline: int = 0
    # Acoustic context: the previous utterance's audio (bytes [0, context_end) of context_key) and
    # its final text. The decoder decodes context + this job's audio with the context text forced,
    # so a short utterance is heard after the speech before it, as in a whole-recording decode.
    context_key: str = ""
    context_end: int = 0
    context_text: str = ""
    v: int = SCHEMA_VERSION


@dataclass
class Result:
    id: str
    kind: str
    session: str
    utt: int
    rev: int = 0
    text: str = ""
    language: str | None = None
    words: list[dict[str, Any]] | None = None
    audio_s: float = 0.0
    queue_ms: float = 0.0
    decode_ms: float = 0.0
    decoder: str = ""
    no_speech: bool = False
    error: str | None = None
    v: int = SCHEMA_VERSION

    @classmethod
    def answering(cls, job: Job, **fields: Any) -> Result:
        """The result of `job` (its id, kind, session, utterance and rev), with `fields`."""
        return cls(id=job.id, kind=job.kind, session=job.session, utt=job.utt, rev=job.rev, **fields)

    @classmethod
    def failure(cls, job: Job, error: str, decoder: str) -> Result:
        return cls.answering(job, decoder=decoder, error=error)


_JOB_FIELDS = {f.name: f for f in dataclasses.fields(Job)}
_RESULT_FIELDS = {f.name: f for f in dataclasses.fields(Result)}
_JOB_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "kind": (str,),
    "session": (str,),
    "gateway": (str,),
    "utt": (int,),
    "audio_key": (str,),
    "audio_end": (int,),
    "rev": (int,),
    "t0": (float, int),
    "lang": (str, type(None)),
    "task": (str,),
    "prompt": (str,),
    "prefix": (str,),
    "word_timestamps": (bool,),
    "enqueued": (int,),
    "deadline": (int,),
    "context_key": (str,),
    "context_end": (int,),
    "context_text": (str,),
    "v": (int,),
}


_RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "kind": (str,),
    "session": (str,),
    "utt": (int,),
    "rev": (int,),
    "text": (str,),
    "language": (str, type(None)),
    "words": (list, type(None)),
    "audio_s": (float, int),
    "queue_ms": (float, int),
    "decode_ms": (float, int),
    "decoder": (str,),
    "no_speech": (bool,),
    "error": (str, type(None)),
    "v": (int,),
}


def _checked_fields(
    obj: dict[str, Any], fields: dict[str, dataclasses.Field[Any]], types: dict[str, tuple[type, ...]], what: str
) -> dict[str, Any]:
    """The known fields of `obj`, each of its declared type; SchemaError names the first that is not."""
    missing = [n for n, f in fields.items() if n not in obj and f.default is dataclasses.MISSING]
    if missing:
        raise SchemaError("%s lacks %s" % (what, ", ".join(missing)))
    kwargs: dict[str, Any] = {}
    for name, value in obj.items():
        if name not in fields:
            continue  # fields added by a newer minor revision are ignored
        allowed = types[name]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise SchemaError("%s field %s has type %s" % (what, name, type(value).__name__))
        kwargs[name] = value
    return kwargs


def _pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(dataclasses.asdict(obj), use_bin_type=True)
    return packed


def _unpack_map(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError) as exc:
        raise SchemaError("%s is not valid msgpack: %s" % (what, exc)) from None
    if not isinstance(obj, dict):
        raise SchemaError("%s is not a msgpack map" % what)
    version = obj.get("v")
    if version != SCHEMA_VERSION:
        raise SchemaError("%s has schema version %r; this build reads version %d" % (what, version, SCHEMA_VERSION))
    return obj


def encode_job(job: Job) -> bytes:
    return _pack(job)


def decode_job(data: bytes) -> Job:
    obj = _unpack_map(data, "job")
    kwargs = _checked_fields(obj, _JOB_FIELDS, _JOB_TYPES, "job")
    job = Job(**kwargs)
    if job.kind not in JOB_KINDS:
        raise SchemaError("job kind %r is not one of %s" % (job.kind, ", ".join(JOB_KINDS)))
    if job.task not in TASKS:
        raise SchemaError("job task %r is not one of %s" % (job.task, ", ".join(TASKS)))
    if job.audio_end < 0 or job.context_end < 0:
        raise SchemaError("job audio_end %d or context_end %d is negative" % (job.audio_end, job.context_end))
    return job


def encode_result(result: Result) -> bytes:
    return _pack(result)


def decode_result(data: bytes) -> Result:
    obj = _unpack_map(data, "result")
    result = Result(**_checked_fields(obj, _RESULT_FIELDS, _RESULT_TYPES, "result"))
    if result.kind not in JOB_KINDS:
        raise SchemaError("result kind %r is not one of %s" % (result.kind, ", ".join(JOB_KINDS)))
    if result.words is not None and not all(isinstance(w, dict) for w in result.words):
        raise SchemaError("result words must be maps")
    return result


# --------------------------------------------------------------------------------------------
# Client protocol (WebSocket /v1/listen). Server messages get their `seq` from the session.

ENCODINGS = ("pcm_s16le",)
CLIENT_OPS = ("start", "audio", "finalize", "keepalive", "stop")
PROMPT_MAX_CHARS = 1000  # a longer prompt is refused, not cut: the client should know
EXCERPT_CHARS = 32  # an error quotes at most this much of what it refuses


def excerpt(value: Any) -> str:
    """A short quote of a client's value for an error message (never the whole of it)."""
    text = repr(value)
    return text if len(text) <= EXCERPT_CHARS else "%s… (%d characters)" % (text[:EXCERPT_CHARS], len(text))


class ProtocolError(SchemaError):
    """A client message the gateway cannot act on; `code` is the error code sent back."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class StartRequest:
    sample_rate: int
    lang: str | None  # None: detect on the first utterance ("auto")
    encoding: str = "pcm_s16le"
    interim: bool = True
    word_timestamps: bool = False
    task: str = "transcribe"
    prompt: str = ""


@dataclass
class ClientMessage:
    op: str
    start: StartRequest | None = None
    audio: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)


def parse_client_text(text: str) -> ClientMessage:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "message is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_message", "message must be a JSON object")
    op = obj.get("op")
    if op not in CLIENT_OPS:
        raise ProtocolError("unknown_op", "unknown op %s (expected one of %s)" % (excerpt(op), ", ".join(CLIENT_OPS)))
    if op == "start":
        return ClientMessage(op="start", start=_parse_start(obj))
    if op == "audio":
        payload = obj.get("payload")
        if not isinstance(payload, str):
            raise ProtocolError("bad_audio", "audio op needs a base64 string 'payload'")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("bad_audio", "audio payload is not valid base64") from None
        return ClientMessage(op="audio", audio=data)
    return ClientMessage(op=op)


def _parse_start(obj: dict[str, Any]) -> StartRequest:
    rate = obj.get("sample_rate", 16000)
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise ProtocolError("bad_sample_rate", "sample_rate must be an integer")
    lang = obj.get("lang", AUTO)
    if lang is not None and not isinstance(lang, str):
        raise ProtocolError("bad_start", "lang must be a string")
    lang = (lang or AUTO).lower()
    if lang != AUTO and lang not in WHISPER_LANGUAGES:
        raise ProtocolError("unknown_language", "lang %s is not a Whisper language code (or auto)" % excerpt(lang))
    encoding = obj.get("encoding", "pcm_s16le")
    if encoding not in ENCODINGS:
        raise ProtocolError(
            "unsupported_encoding", "encoding %s is not supported (use %s)" % (excerpt(encoding), ", ".join(ENCODINGS))
        )
    task = obj.get("task", "transcribe")
    if task not in TASKS:
        raise ProtocolError("bad_start", "task must be one of %s" % ", ".join(TASKS))
    prompt = obj.get("prompt") or ""
    if not isinstance(prompt, str):
        raise ProtocolError("bad_start", "prompt must be a string")
    if len(prompt) > PROMPT_MAX_CHARS:
        raise ProtocolError(
            "field_too_long", "prompt is %d characters; at most %d are taken" % (len(prompt), PROMPT_MAX_CHARS)
        )
    for flag in ("interim", "word_timestamps"):
        if flag in obj and not isinstance(obj[flag], bool):
            raise ProtocolError("bad_start", "%s must be true or false" % flag)
    return StartRequest(
        sample_rate=rate,
        lang=None if lang == AUTO else lang,
        encoding=encoding,
        interim=obj.get("interim", True),
        word_timestamps=obj.get("word_timestamps", False),
        task=task,
        prompt=prompt,
    )


def server_started(session_id: str, sample_rate: int, lang: str | None) -> dict[str, Any]:
    return {"type": "started", "session_id": session_id, "sample_rate": sample_rate, "lang": lang or "auto"}


def server_interim(utt: int, rev: int, text: str, stable_chars: int, start: float, end: float) -> dict[str, Any]:
    return {
        "type": "interim",
        "utterance": utt,
        "rev": rev,
        "text": text,
        "stable_chars": stable_chars,
        "start": round(start, 3),
        "end": round(end, 3),
    }


def server_final(
    result: Result, start: float, end: float, want_words: bool, endpoint_ms: float = 0.0
) -> dict[str, Any]:
    """`endpoint_ms`, `queue_ms` and `decode_ms` say where the final's latency went: silence
    waited before the end was decided, time queued, model time."""
    msg: dict[str, Any] = {
        "type": "final",
        "utterance": result.utt,
        "text": result.text,
        "start": round(start, 3),
        "end": round(end, 3),
        "language": result.language,
        "endpoint_ms": round(endpoint_ms, 1),
        "queue_ms": round(result.queue_ms, 1),
        "decode_ms": round(result.decode_ms, 1),
    }
    if result.no_speech:
        msg["no_speech"] = True
    if want_words:
        msg["words"] = result.words or []
    return msg


def server_error(code: str, message: str, utt: int | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if utt is not None:
        msg["utterance"] = utt
    return msg


def server_done() -> dict[str, Any]:
    return {"type": "done"}
