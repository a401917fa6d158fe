"""OpenAI's Realtime API in transcription mode (`WS /v1/realtime?intent=transcription`), as the
official SDKs speak it: the GA `session.update` (`session.type = "transcription"`) and the beta
`transcription_session.update` (header `OpenAI-Beta: realtime=v1`).

Per turn: `input_audio_buffer.speech_started`, append-only `…input_audio_transcription.delta`
events (only the stable prefix, which no later interim revises), `speech_stopped`, `committed`,
the item (`conversation.item.added`/`.done`, beta `conversation.item.created`), then
`…input_audio_transcription.completed` with the final's transcript (which, as OpenAI says of its
own models, may differ from the deltas). With `turn_detection: null` only
`input_audio_buffer.commit` ends a turn.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from typing import Any

from common.protocol import CLOSE_NORMAL
from gateway.core.events import Event, Final, FinalFailed, Interim, SessionFailed, SpeechStarted, SpeechStopped
from gateway.core.options import (
    BadInput,
    SessionOptions,
    check_keyterms,
    check_language,
    check_prompt,
    check_served_language,
    excerpt,
)
from gateway.protocols import g711
from gateway.protocols.base import Host
from gateway.protocols.openai_config import (
    GA_FORMATS,
    LAW,
    MIN_COMMIT_MS,
    PCM_RATE,
    parse_eot,
    parse_format,
    parse_turn,
)


def error_event(
    code: str, message: str, kind: str = "invalid_request_error", param: str | None = None
) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": kind, "code": code, "message": message, "param": param, "event_id": None},
    }


class OpenAIAdapter:
    name = "openai"
    start_required = False

    def __init__(self, host: Host) -> None:
        self.host = host
        self.beta = host.headers.get("openai-beta", "").startswith("realtime")
        self.session_id = "sess_" + uuid.uuid4().hex[:24]
        self.prefix = "event_" + uuid.uuid4().hex[:8]
        self.format = ("audio/pcm", PCM_RATE)
        self.model = host.query.get("model", "") or "whisper-1"
        self.language: str | None = None
        self.prompt = ""
        self.keywords: tuple[str, ...] = ()
        self.turn_detection: dict[str, Any] | None = {"type": "semantic_vad", "eagerness": "auto"}
        self.noise_reduction: Any = None
        self.include: list[str] = []
        self.items: dict[int, str] = {}  # utterance -> item id
        self.sent: dict[int, str] = {}  # utterance -> text sent as deltas so far
        self.previous_item: str | None = None
        self.uncommitted_ms = 0.0  # audio appended since the last turn ended

    # --- the adapter protocol -----------------------------------------------------------

    def idle_timeout_s(self) -> float:
        return self.host.settings.IDLE_TIMEOUT_S

    def stamp(self, msg: dict[str, Any], n: int) -> None:
        msg.setdefault("event_id", "%s%06d" % (self.prefix, n))

    def error(self, code: str, message: str) -> dict[str, Any]:
        kind = "server_error" if code in ("internal", "overloaded") else "invalid_request_error"
        return error_event(code, message, kind)

    async def on_open(self) -> None:
        intent = self.host.query.get("intent", "transcription")
        if intent != "transcription":
            raise BadInput(
                "unsupported_intent",
                "this service serves transcription sessions only (intent=transcription), not %s" % excerpt(intent),
                fatal=True,
            )
        await self.host.open(self._options())
        self.host.send(
            {"type": "transcription_session.created" if self.beta else "session.created", "session": self._session()}
        )

    async def on_text(self, text: str) -> bool:
        try:
            event = json.loads(text)
        except (ValueError, RecursionError):
            raise BadInput("invalid_json", "the event is not valid JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise BadInput("invalid_event", "an event must be a JSON object with a string 'type'")
        kind = event["type"]
        if kind == "input_audio_buffer.append":
            return await self._append(event.get("audio"))
        if kind == "input_audio_buffer.commit":
            return await self._commit()
        if kind == "input_audio_buffer.clear":
            await self.host.sessions[0].discard()
            self.uncommitted_ms = 0.0
            self.host.send({"type": "input_audio_buffer.cleared"})
            return True
        if kind in ("session.update", "transcription_session.update"):
            session = event.get("session")
            if not isinstance(session, dict):
                raise BadInput("invalid_session", "%s needs a 'session' object" % kind)
            self._update(session, beta=kind.startswith("transcription_session"))
            done = "transcription_session.updated" if kind.startswith("transcription_session") else "session.updated"
            self.host.send({"type": done, "session": self._session(beta=kind.startswith("transcription_session"))})
            return True
        raise BadInput(
            "unsupported_event", "event %s is not served here: this is a transcription session" % excerpt(kind)
        )

    async def on_binary(self, data: bytes) -> bool:
        raise BadInput("invalid_event", "send audio as input_audio_buffer.append events (base64), not binary frames")

    def on_event(self, channel: int, event: Event) -> None:
        host = self.host
        vad = self.turn_detection is not None
        if isinstance(event, SpeechStarted):
            item = self.items[event.utt] = "item_" + uuid.uuid4().hex[:20]
            if vad:
                host.send(
                    {"type": "input_audio_buffer.speech_started", "audio_start_ms": ms(event.start), "item_id": item}
                )
        elif isinstance(event, Interim):
            interim_item = self.items.get(event.utt)
            sent = self.sent.get(event.utt, "")
            if interim_item is not None and len(event.stable) > len(sent) and event.stable.startswith(sent):
                host.send(
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "item_id": interim_item,
                        "content_index": 0,
                        "delta": event.stable[len(sent) :],
                    }
                )
                self.sent[event.utt] = event.stable
        elif isinstance(event, SpeechStopped):
            item = self.items.setdefault(event.utt, "item_" + uuid.uuid4().hex[:20])
            if vad:
                host.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ms(event.end), "item_id": item})
            self._committed(item)
        elif isinstance(event, Final):
            item = self.items.pop(event.utt, "")
            self.sent.pop(event.utt, None)
            host.send(completed(item, event.text, event.end - event.start))
        elif isinstance(event, FinalFailed):
            item = self.items.pop(event.utt, "")
            self.sent.pop(event.utt, None)
            host.send(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    "item_id": item,
                    "content_index": 0,
                    "error": {
                        "type": "server_error",
                        "code": "transcription_failed",
                        "message": event.why,
                        "param": None,
                    },
                },
                error="final_failed",
            )
        elif isinstance(event, SessionFailed):
            host.send(
                error_event("internal", "this session failed (%s); please reconnect" % event.why, "server_error"),
                error="internal",
            )

    async def on_timeout(self, code: str, message: str) -> None:
        self.host.send(self.error(code, message), error=code)
        await self.host.drain()
        self.host.close(CLOSE_NORMAL)

    # --- client events --------------------------------------------------------------------

    async def _append(self, audio: Any) -> bool:
        if not isinstance(audio, str):
            raise BadInput("invalid_audio", "input_audio_buffer.append needs 'audio', a base64 string")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise BadInput("invalid_audio", "the audio is not valid base64") from None
        kind, rate = self.format
        if kind in LAW:
            data = g711.decode(data, LAW[kind])
        elif len(data) % 2:
            raise BadInput("invalid_audio", "audio of %d bytes is not whole 16-bit samples; dropped" % len(data))
        self.uncommitted_ms += len(data) / 2 / rate * 1000.0
        return await self.host.audio([data])

    async def _commit(self) -> bool:
        if self.uncommitted_ms < MIN_COMMIT_MS:
            raise BadInput(
                "input_audio_buffer_commit_empty",
                "buffer too small: expected at least %d ms of audio, the buffer holds %.2f ms"
                % (MIN_COMMIT_MS, self.uncommitted_ms),
            )
        ended = await self.host.finalize()
        if ended is None:
            return False
        if not ended:
            # Audio without speech in it: a turn with an empty transcript, as a model would hear it.
            item = "item_" + uuid.uuid4().hex[:20]
            self._committed(item)
            self.host.send(completed(item, "", self.uncommitted_ms / 1000.0))
        self.uncommitted_ms = 0.0
        return True

    def _committed(self, item: str) -> None:
        self.uncommitted_ms = 0.0
        self.host.send(
            {"type": "input_audio_buffer.committed", "previous_item_id": self.previous_item, "item_id": item}
        )
        body = {
            "id": item,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        if self.beta:
            self.host.send({"type": "conversation.item.created", "previous_item_id": self.previous_item, "item": body})
        else:
            self.host.send({"type": "conversation.item.added", "previous_item_id": self.previous_item, "item": body})
            self.host.send({"type": "conversation.item.done", "previous_item_id": self.previous_item, "item": body})
        self.previous_item = item

    def _update(self, session: dict[str, Any], beta: bool) -> None:
        """Apply a session update: every field is checked before any is applied."""
        if beta:
            fmt = session.get("input_audio_format")
            transcription = session.get("input_audio_transcription")
            has_turn, turn = "turn_detection" in session, session.get("turn_detection")
            noise = session.get("input_audio_noise_reduction", self.noise_reduction)
        else:
            kind = session.get("type", "transcription")
            if kind != "transcription":
                raise BadInput(
                    "unsupported_session_type",
                    'session type %s is not served here; use "transcription"' % excerpt(kind),
                )
            audio_in = ((session.get("audio") or {}).get("input")) or {}
            if not isinstance(audio_in, dict):
                raise BadInput("invalid_session", "session.audio.input must be an object")
            fmt = audio_in.get("format")
            transcription = audio_in.get("transcription")
            has_turn, turn = "turn_detection" in audio_in, audio_in.get("turn_detection")
            noise = audio_in.get("noise_reduction", self.noise_reduction)
        new_format = parse_format(fmt, beta) if fmt is not None else self.format
        model, language, prompt, keywords = self.model, self.language, self.prompt, self.keywords
        if transcription is not None:
            if not isinstance(transcription, dict):
                raise BadInput("invalid_session", "transcription must be an object")
            model = str(transcription.get("model") or model)[:64]
            if "language" in transcription:
                language = check_language(transcription.get("language"), "language")
                try:
                    check_served_language(language, self.host.english_only)
                except BadInput as exc:
                    raise BadInput(exc.code, exc.message) from None
            prompt = check_prompt(transcription.get("prompt", prompt))
            if "keywords" in transcription:
                keywords = check_keyterms(transcription.get("keywords"), "keywords")
        new_turn = parse_turn(turn, self.host.settings.PRE_ROLL_MS) if has_turn else None
        new_eot = parse_eot(turn) if has_turn and self.host.turn_model else None
        if isinstance(session.get("include"), list):
            self.include = [str(x)[:64] for x in session["include"][:8]]
        # Everything checked: apply it.
        self.format, self.model, self.language, self.prompt, self.keywords = (
            new_format,
            model,
            language,
            prompt,
            keywords,
        )
        self.noise_reduction = noise
        s = self.host.sessions[0]
        s.set_rate(self.format[1])
        s.set_language(language)
        s.options.prompt, s.options.hotwords = prompt, keywords
        if has_turn:
            self.turn_detection = None if turn is None else dict(turn)
            s.set_turn(new_turn, new_eot)

    # --- what the client is told of its session ---------------------------------------------

    def _options(self) -> SessionOptions:
        # The default turn detection is semantic_vad: the end-of-turn model where it is served.
        return SessionOptions(
            sample_rate=self.format[1],
            lang=self.language,
            interim=True,
            prompt=self.prompt,
            hotwords=self.keywords,
            eot=parse_eot(self.turn_detection) if self.host.turn_model else None,
        )

    def _session(self, beta: bool | None = None) -> dict[str, Any]:
        beta = self.beta if beta is None else beta
        transcription: dict[str, Any] = {"model": self.model, "language": self.language, "prompt": self.prompt}
        if self.keywords:
            transcription["keywords"] = list(self.keywords)
        common = {"id": self.session_id, "object": "realtime.transcription_session", "include": self.include}
        expires = int(time.time() + self.host.settings.MAX_SESSION_S)
        if beta:
            return {
                **common,
                "expires_at": expires,
                "input_audio_format": GA_FORMATS[self.format[0]],
                "input_audio_transcription": transcription,
                "turn_detection": self.turn_detection,
                "input_audio_noise_reduction": self.noise_reduction,
                "modalities": ["text"],
            }
        fmt: dict[str, Any] = {"type": self.format[0]}
        if self.format[0] == "audio/pcm":
            fmt["rate"] = self.format[1]
        return {
            **common,
            "type": "transcription",
            "expires_at": expires,
            "audio": {
                "input": {
                    "format": fmt,
                    "transcription": transcription,
                    "turn_detection": self.turn_detection,
                    "noise_reduction": self.noise_reduction,
                }
            },
        }


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def completed(item: str, transcript: str, seconds: float) -> dict[str, Any]:
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": item,
        "content_index": 0,
        "transcript": transcript,
        "usage": {"type": "duration", "seconds": round(max(0.0, seconds), 3)},
    }
