"""The schema between gateways and decoders: decode jobs and results (msgpack, version 1).
(What clients speak is the gateway's business: gateway/protocols/.)

A job or result whose version is missing, wrong or unknown is a `SchemaError` naming what is
wrong; it never reaches the model or a client half-read.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any

import msgpack

from common.errors import SchemaError

SCHEMA_VERSION = 1
TASKS = ("transcribe", "translate")


class JobKind(enum.StrEnum):
    """What a job is for; on the wire, its value."""

    FINAL = "final"  # an utterance's final transcript
    INTERIM = "interim"  # a revision of the transcript of an utterance still being spoken
    BATCH = "batch"  # one part of an uploaded file (POST /v1/audio/transcriptions)
    # The would-be final of an utterance whose speaker has paused: decoded while the endpointer
    # waits to be sure, so that the final is ready when it is.
    SPECULATIVE = "speculative"
    # Whether the speaker has finished their turn: the end-of-turn model on the utterance's
    # audio so far (decoder/turns.py). Its result carries `eot`, not text.
    TURN = "turn"

    @property
    def decodes_as_final(self) -> bool:
        """Decoded as a final is (beam search, context, word times): a speculative job's result
        is its utterance's final."""
        return self in (JobKind.FINAL, JobKind.SPECULATIVE)

    @property
    def cached(self) -> bool:
        """Whether its result is kept for a second request of the same job id."""
        return self not in (JobKind.INTERIM, JobKind.TURN)


JOB_KINDS = tuple(JobKind)


@dataclass
class Job:
    id: str  # a re-queue keeps it (common/keys.py builds it), so the result cache answers it
    kind: JobKind  # final, interim, batch (a file part), speculative, turn
    session: str
    gateway: str  # whose result channel gets the result
    utt: int  # the utterance's number in its session (a file part's number in its file)
    audio_key: str  # the utterance's 16 kHz PCM16 in Redis
    audio_end: int  # decode bytes [0, audio_end) of it
    rev: int = 0  # an interim's revision
    t0: float = 0.0  # the utterance's start, seconds of session audio
    lang: str | None = None  # None: detect
    task: str = "transcribe"  # or translate
    prompt: str = ""  # the session's recent text (and its own prompt)
    prefix: str = ""  # text the decode must start with (an interim's stable prefix)
    word_timestamps: bool = False
    enqueued: int = 0  # unix ms
    deadline: int = 0  # unix ms: past it, the decoder drops the job undecoded (0: none)
    # Acoustic context: the previous utterance's audio (bytes [0, context_end) of context_key) and
    # its final text. The decoder decodes context + this job's audio with the context text forced,
    # so a short utterance is heard after the speech before it, as in a whole-recording decode.
    context_key: str = ""
    context_end: int = 0
    context_text: str = ""
    # Key terms the client expects (names, jargon), comma-separated: put in the decoder's prompt.
    hotwords: str = ""
    # Who spoke: a final's (or speculative final's) result carries its audio's speaker embedding.
    speakers: bool = False
    v: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.kind = JobKind(self.kind)


@dataclass
class Result:
    id: str  # the job's
    kind: JobKind
    session: str
    utt: int
    rev: int = 0
    text: str = ""
    language: str | None = None  # detected, or the job's
    words: list[dict[str, Any]] | None = None  # {word, start, end, probability}, when asked
    audio_s: float = 0.0  # seconds of audio decoded
    queue_ms: float = 0.0  # enqueued to decode start
    decode_ms: float = 0.0  # model time
    decoder: str = ""  # the decoder's id
    no_speech: bool = False  # the decoder judged it no speech (the text is empty)
    error: str | None = None  # why the job failed (the text is empty)
    confidence: float = 0.0  # exp(average token log-probability) of the decoded text
    # A file part's timestamped segments, in file time: {start, end, text, words}.
    segments: list[dict[str, Any]] | None = None
    # A turn job's: how sure the end-of-turn model is that the speaker has finished (0-1).
    eot: float | None = None
    # A job that asked for `speakers`: its audio's speaker embedding (256 floats, L2-normed).
    voice: list[float] | None = None
    v: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.kind = JobKind(self.kind)

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
    "hotwords": (str,),
    "speakers": (bool,),
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
    "confidence": (float, int),
    "segments": (list, type(None)),
    "eot": (float, int, type(None)),
    "voice": (list, type(None)),
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


def _kind(value: str, what: str) -> JobKind:
    try:
        return JobKind(value)
    except ValueError:
        raise SchemaError("%s kind %r is not one of %s" % (what, value, ", ".join(JOB_KINDS))) from None


def encode_job(job: Job) -> bytes:
    return _pack(job)


def decode_job(data: bytes) -> Job:
    obj = _unpack_map(data, "job")
    kwargs = _checked_fields(obj, _JOB_FIELDS, _JOB_TYPES, "job")
    kwargs["kind"] = _kind(kwargs["kind"], "job")
    job = Job(**kwargs)
    if job.task not in TASKS:
        raise SchemaError("job task %r is not one of %s" % (job.task, ", ".join(TASKS)))
    if job.audio_end < 0 or job.context_end < 0:
        raise SchemaError("job audio_end %d or context_end %d is negative" % (job.audio_end, job.context_end))
    return job


def encode_result(result: Result) -> bytes:
    return _pack(result)


def decode_result(data: bytes) -> Result:
    obj = _unpack_map(data, "result")
    kwargs = _checked_fields(obj, _RESULT_FIELDS, _RESULT_TYPES, "result")
    kwargs["kind"] = _kind(kwargs["kind"], "result")
    result = Result(**kwargs)
    if result.words is not None and not all(isinstance(w, dict) for w in result.words):
        raise SchemaError("result words must be maps")
    if result.segments is not None and not all(isinstance(s, dict) for s in result.segments):
        raise SchemaError("result segments must be maps")
    return result
