"""The service's own protocol (docs/clients/native.md; `/v1/listen` and `/ws`): JSON ops in,
JSON messages out, every one stamped with `seq`.

    -> {"op":"start","sample_rate":16000,"lang":"en"}   then binary PCM16 (or {"op":"audio"})
    <- started, interim…, final…, error…, done
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from common.errors import SchemaError
from common.protocol import CLOSE_NORMAL, CLOSE_POLICY, RESUME_CLOSE
from gateway.core.events import Event, Final, FinalFailed, Interim, SessionFailed
from gateway.core.options import (
    BadInput,
    SessionOptions,
    check_diarize,
    check_eager,
    check_end_of_turn,
    check_keyterms,
    check_language,
    check_prompt,
    check_rate,
    check_served_language,
    excerpt,
)
from gateway.errors import ResumeRefused
from gateway.protocols.base import Host, SessionView

ENCODINGS = ("pcm_s16le",)
CLIENT_OPS = ("start", "resume", "audio", "finalize", "keepalive", "stop")
TASKS = ("transcribe", "translate")


class ProtocolError(SchemaError):
    """A client message the gateway cannot parse; `code` is the error code sent back."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class ClientMessage:
    op: str
    start: SessionOptions | None = None
    audio: bytes = b""
    resume: tuple[str, str, int] | None = None  # session id, resume token, last seq seen


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
        try:
            return ClientMessage(op="start", start=parse_start(obj))
        except BadInput as exc:
            if exc.fatal:
                raise
            raise ProtocolError(exc.code, exc.message) from None
    if op == "resume":
        sid, token, last = obj.get("session_id"), obj.get("resume_token"), obj.get("last_seq", -1)
        if not (isinstance(sid, str) and 0 < len(sid) <= 64 and isinstance(token, str) and 0 < len(token) <= 128):
            raise ProtocolError("bad_resume", "resume needs session_id and resume_token strings")
        if not isinstance(last, int) or isinstance(last, bool) or last < -1:
            raise ProtocolError("bad_resume", "last_seq must be the last seq received (-1: none)")
        return ClientMessage(op="resume", resume=(sid, token, last))
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


def parse_start(obj: dict[str, Any]) -> SessionOptions:
    """A `start` message's options. The sample rate is checked last: a bad one ends the
    connection (4400), any other bad field is an error the client may correct."""
    rate = obj.get("sample_rate", 16000)
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise BadInput("bad_sample_rate", "sample_rate must be an integer")
    lang = check_language(obj.get("lang"))
    encoding = obj.get("encoding", "pcm_s16le")
    if encoding not in ENCODINGS:
        raise BadInput(
            "unsupported_encoding", "encoding %s is not supported (use %s)" % (excerpt(encoding), ", ".join(ENCODINGS))
        )
    task = obj.get("task", "transcribe")
    if task not in TASKS:
        raise BadInput("bad_start", "task must be one of %s" % ", ".join(TASKS))
    prompt = check_prompt(obj.get("prompt"))
    for flag in ("interim", "word_timestamps"):
        if flag in obj and not isinstance(obj[flag], bool):
            raise BadInput("bad_start", "%s must be true or false" % flag)
    hotwords = check_keyterms(obj.get("keyterms"))
    eager = check_eager(obj.get("eager_eot_ms"))
    eot = check_end_of_turn(obj)
    diarize, max_speakers = check_diarize(obj.get("diarize"), obj.get("max_speakers"))
    return SessionOptions(
        sample_rate=check_rate(rate),
        lang=lang,
        interim=obj.get("interim", True),
        word_timestamps=obj.get("word_timestamps", False),
        task=task,
        prompt=prompt,
        hotwords=hotwords,
        eager_ms=eager,
        eot=eot,
        diarize=diarize,
        max_speakers=max_speakers,
    )


def server_started(session_id: str, sample_rate: int, lang: str | None, resume_token: str = "") -> dict[str, Any]:
    msg = {"type": "started", "session_id": session_id, "sample_rate": sample_rate, "lang": lang or "auto"}
    if resume_token:
        msg["resume_token"] = resume_token
    return msg


def server_interim(ev: Interim) -> dict[str, Any]:
    return {
        "type": "interim",
        "utterance": ev.utt,
        "rev": ev.rev,
        "text": ev.text,
        "stable_chars": len(ev.stable),
        "start": round(ev.start, 3),
        "end": round(ev.end, 3),
    }


def server_final(ev: Final, want_words: bool) -> dict[str, Any]:
    """`endpoint_ms`, `queue_ms` and `decode_ms` say where the final's latency went: silence
    waited before the end was decided, time queued, model time."""
    msg: dict[str, Any] = {
        "type": "final",
        "utterance": ev.utt,
        "text": ev.text,
        "start": round(ev.start, 3),
        "end": round(ev.end, 3),
        "language": ev.language,
        "endpoint_ms": round(ev.endpoint_ms, 1),
        "queue_ms": round(ev.queue_ms, 1),
        "decode_ms": round(ev.decode_ms, 1),
    }
    if ev.no_speech:
        msg["no_speech"] = True
    if ev.speaker is not None:
        msg["speaker"] = ev.speaker
    if want_words:
        msg["words"] = (
            [{**w, "speaker": ev.speaker} for w in ev.words or []] if ev.speaker is not None else ev.words or []
        )
    return msg


def server_error(code: str, message: str, utt: int | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if utt is not None:
        msg["utterance"] = utt
    return msg


def server_done() -> dict[str, Any]:
    return {"type": "done"}


def render(event: Event, want_words: bool) -> dict[str, Any] | None:
    """The native message of a session event (None: the protocol has none for it)."""
    if isinstance(event, Interim):
        return server_interim(event)
    if isinstance(event, Final):
        return server_final(event, want_words)
    if isinstance(event, FinalFailed):
        return server_error(
            "final_failed", "utterance %d could not be transcribed: %s" % (event.utt, event.why), utt=event.utt
        )
    if isinstance(event, SessionFailed):
        return server_error("internal", "this session failed (%s); please reconnect" % event.why)
    return None  # speech started/stopped: implied by interims and finals


class NativeAdapter:
    name = "native"
    start_required = True

    def __init__(self, host: Host) -> None:
        self.host = host
        self.started = False
        self.want_words = False

    def idle_timeout_s(self) -> float:
        return self.host.settings.IDLE_TIMEOUT_S

    def stamp(self, msg: dict[str, Any], n: int) -> None:
        msg["seq"] = n

    def error(self, code: str, message: str) -> dict[str, Any]:
        return server_error(code, message)

    async def on_open(self) -> None:
        """Nothing until `start`."""

    async def on_text(self, text: str) -> bool:
        host = self.host
        try:
            cmd = parse_client_text(text)
        except ProtocolError as exc:
            host.send(server_error(exc.code, exc.message), error=exc.code)
            return True
        if cmd.op == "start":
            if self.started:
                host.send(server_error("already_started", "the session has already started"), error="already_started")
                return True
            assert cmd.start is not None
            check_served_language(cmd.start.lang, host.english_only)
            [session] = await host.open(cmd.start, resumable=True)
            self.started = True
            self.want_words = cmd.start.word_timestamps
            host.send(server_started(session.id, cmd.start.sample_rate, cmd.start.lang, session.resume_token))
            return True
        if cmd.op == "resume":
            return await self._resume(cmd)
        if cmd.op == "audio":
            return await self.on_binary(cmd.audio)
        if not self.started:
            if cmd.op != "keepalive":
                host.send(server_error("not_started", "send a start message first"), error="not_started")
            return True
        if cmd.op == "finalize":
            return await host.finalize() is not None
        if cmd.op == "stop":
            await host.drain()
            host.send(server_done())
            host.finish()
            await host.linger_for_close()
            host.close(CLOSE_NORMAL)
            return False
        return True  # keepalive: reading it was the point

    async def _resume(self, cmd: ClientMessage) -> bool:
        """`resume` instead of `start`: the session goes on here; what its client missed is sent
        again (original seq), then `resumed` says how much of its audio is held."""
        host = self.host
        assert cmd.resume is not None
        if self.started:
            host.send(server_error("already_started", "the session has already started"), error="already_started")
            return True
        try:
            session = await host.resume(*cmd.resume, announce=self._resumed)
        except ResumeRefused as exc:
            host.send(server_error(exc.code, exc.message), error=exc.code)
            host.close(RESUME_CLOSE.get(exc.code, CLOSE_POLICY))
            return False
        if session is None:  # it had ended: the client only missed its end
            await host.linger_for_close()
            host.close(CLOSE_NORMAL)
            return False
        return True

    def _resumed(self, session: SessionView) -> None:
        """The session goes on here: `resumed`, after what the client missed and before
        anything new (a final its first step delivers carries the words it asked for)."""
        self.started = True
        self.want_words = session.options.word_timestamps
        self.host.send(
            {
                "type": "resumed",
                "session_id": session.id,
                "audio_received_ms": round(session.audio_s * 1000),
                "utterance": session.next_utt,
            }
        )

    async def on_binary(self, data: bytes) -> bool:
        host = self.host
        if not self.started:
            host.send(
                server_error("not_started", "audio before start; send a start message first"), error="not_started"
            )
            return True
        if len(data) % 2:
            host.send(
                server_error("odd_bytes", "audio of %d bytes is not whole 16-bit samples; frame dropped" % len(data)),
                error="odd_bytes",
            )
            return True
        return await host.audio([data])

    def on_event(self, channel: int, event: Event) -> None:
        msg = render(event, self.want_words)
        if msg is not None:
            self.host.send(msg, error=msg["code"] if msg["type"] == "error" else "")

    async def on_timeout(self, code: str, message: str) -> None:
        host = self.host
        host.send(server_error(code, message), error=code)
        if self.started:
            await host.drain()
            host.send(server_done())
        host.close(CLOSE_NORMAL)
