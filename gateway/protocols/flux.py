"""Deepgram Flux (`/v2/listen`): turn-based transcription for voice agents, as the Deepgram SDK's
`listen.v2` speaks it.

In: binary audio (`encoding` linear16 or mulaw at `sample_rate`), and `CloseStream`, `Configure`
(thresholds and key terms: `ConfigureSuccess` or `ConfigureFailure`, the session keeping what
it had) and `ForceEndTurn`. Out: `Connected`, then `TurnInfo` events: `StartOfTurn`, `Update`
(about every 0.25 s of audio in a turn, with the words so far), `EagerEndOfTurn` (the
utterance's speculative final, once the end-of-turn model is above `eager_eot_threshold`),
`TurnResumed` (speech went on after it), `EndOfTurn` (the final; `trigger` model, manual or
timeout); `Warning`, and `Error` before a close. Every message carries `sequence_id`.

Flux's rules hold: an EagerEndOfTurn is never empty; TurnResumed comes only after one; an
EndOfTurn after an EagerEndOfTurn repeats its transcript exactly (the final is that speculative
result: gateway/core/eot.py); `turn_index` goes up after each EndOfTurn. Turns end by the
end-of-turn model (`eot_threshold`, `eot_timeout_ms`) where the decoders serve it, else by the
service's silence rules.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from common.protocol import CLOSE_BAD_REQUEST, CLOSE_INTERNAL, CLOSE_NORMAL
from gateway.core.events import (
    EndReason,
    Event,
    Final,
    FinalFailed,
    Interim,
    SessionFailed,
    SpeechStarted,
    TurnEager,
    TurnResumed,
)
from gateway.core.options import BadInput, EotRule, SessionOptions, check_keyterms, check_rate, excerpt
from gateway.protocols import g711
from gateway.protocols.base import Host
from gateway.protocols.deepgram_query import IDLE_S, keyterms, number, spread
from gateway.protocols.flux_config import ENCODINGS, Thresholds, parse_thresholds

UPDATE_S = 0.25  # an Update this often (audio time) in an ongoing turn
TRIGGER = {EndReason.MODEL: "model", EndReason.FINALIZE: "manual"}  # others: the silence cap


class FluxAdapter:
    name = "flux"
    start_required = False

    def __init__(self, host: Host) -> None:
        self.host = host
        self.request_id = str(uuid.uuid4())
        self.encoding = "linear16"
        self.rate = 16000
        self.thresholds = Thresholds()
        self.terms: tuple[str, ...] = ()
        self.carry = b""
        self.turn_index = 0
        self.turn: dict[str, Any] | None = None  # the ongoing turn: start, transcript, words, eager, eot
        self.updated_at = 0.0
        # Flux tells one turn at a time: the next utterance may begin before this one's final
        # is in; what it says waits until this turn's EndOfTurn.
        self.told = 0  # the utterance whose turn is being told
        self.later: list[Event] = []

    # --- the adapter protocol -----------------------------------------------------------

    def idle_timeout_s(self) -> float:
        return min(IDLE_S, self.host.settings.IDLE_TIMEOUT_S)

    def stamp(self, msg: dict[str, Any], n: int) -> None:
        msg["sequence_id"] = n

    def error(self, code: str, message: str) -> dict[str, Any]:
        return {"type": "Error", "code": code.upper(), "description": message}

    async def on_open(self) -> None:
        q = self.host.query
        encoding = q.get("encoding", "linear16")
        if encoding not in ENCODINGS:
            raise BadInput(
                "unsupported_encoding",
                "encoding %s is not supported: linear16 or mulaw" % excerpt(encoding),
                fatal=True,
            )
        self.encoding = encoding
        rate = number(q, "sample_rate", 0, 10**6)
        self.rate = check_rate(rate if rate is not None else (8000 if encoding == "mulaw" else 16000))
        self.thresholds = parse_thresholds(q, Thresholds(), fatal=True)
        self.terms = keyterms(q)
        options = SessionOptions(
            sample_rate=self.rate,
            lang="en",
            interim=True,
            # Flux's words carry no times, and aligning them costs a final ~10% more decode
            # (~20 ms for a 10 s sentence on a CPU core), on the path to every EndOfTurn.
            word_timestamps=False,
            hotwords=self.terms,
            eot=self._rule(),
        )
        await self.host.open(options)
        self.host.send({"type": "Connected", "request_id": self.request_id})

    def _rule(self) -> EotRule | None:
        t = self.thresholds
        return EotRule(t.eot, t.eager, t.timeout_ms) if self.host.turn_model else None

    async def on_text(self, text: str) -> bool:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            raise BadInput("invalid_json", "the message is not valid JSON") from None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "CloseStream":
            await self.host.drain()
            self.host.finish()
            self.host.close(CLOSE_NORMAL)  # at once: the client has all it asked for
            return False
        if kind == "ForceEndTurn":
            return await self.host.finalize() is not None
        if kind == "Configure":
            self._configure(msg)
            return True
        if kind == "KeepAlive":
            return True
        raise BadInput("unknown_message", "unknown message %s (CloseStream, Configure, ForceEndTurn)" % excerpt(kind))

    def _configure(self, msg: dict[str, Any]) -> None:
        """New thresholds and key terms, all checked before any is taken."""
        try:
            raw = msg.get("thresholds") or {}
            if not isinstance(raw, dict):
                raise BadInput("invalid_thresholds", "thresholds must be an object")
            thresholds = parse_thresholds(raw, self.thresholds, fatal=False)
            terms = check_keyterms(msg["keyterms"], "keyterms") if "keyterms" in msg else self.terms
        except BadInput as exc:
            self.host.send(
                {
                    "type": "ConfigureFailure",
                    "request_id": self.request_id,
                    "code": exc.code.upper(),
                    "description": exc.message,
                }
            )
            return
        self.thresholds, self.terms = thresholds, terms
        session = self.host.sessions[0]
        session.options.hotwords = terms
        session.set_turn(None, self._rule())
        t = thresholds
        self.host.send(
            {
                "type": "ConfigureSuccess",
                "request_id": self.request_id,
                "thresholds": {"eot_threshold": t.eot, "eager_eot_threshold": t.eager, "eot_timeout_ms": t.timeout_ms},
                "keyterms": list(terms),
            }
        )

    async def on_binary(self, data: bytes) -> bool:
        width = 2 if self.encoding == "linear16" else 1
        data = self.carry + data
        whole = len(data) - len(data) % width
        data, self.carry = data[:whole], data[whole:]
        if not data:
            return True
        if self.encoding == "mulaw":
            data = g711.decode(data, "ulaw")
        going = await self.host.audio([data])
        if self.turn is not None:
            now = self.host.sessions[0].audio_s
            if now - self.updated_at >= UPDATE_S:
                self._send_turn("Update", self.turn["transcript"], self.turn["words"], now)
        return going

    def on_event(self, channel: int, event: Event) -> None:
        utt = getattr(event, "utt", None)
        if utt is not None and utt > self.told:
            self.later.append(event)
            return
        host = self.host
        if isinstance(event, SpeechStarted):
            self.turn = {"start": event.start, "transcript": "", "words": [], "eager": None, "eot": 0.0}
            self._send_turn("StartOfTurn", "", [], event.start)
        elif isinstance(event, Interim) and self.turn is not None:
            # Flux's clients take an Update's words (LiveKit's shows nothing without them): the
            # interim's, spread evenly over its audio (an interim has no word times of its own).
            words = turn_words(event.text, event.start, event.end, event.confidence)
            self.turn["transcript"], self.turn["words"] = event.text, words
            self._send_turn("Update", event.text, words, event.end)
        elif isinstance(event, TurnEager) and self.turn is not None:
            words = turn_words(event.text, event.start, event.end, event.confidence)
            self.turn.update(eager=(event.text, words), eot=event.eot)
            self._send_turn("EagerEndOfTurn", event.text, words, event.end)
        elif isinstance(event, TurnResumed) and self.turn is not None and self.turn["eager"] is not None:
            self.turn["eager"] = None
            self._send_turn("TurnResumed", self.turn["transcript"], self.turn["words"], host.sessions[0].audio_s)
        elif isinstance(event, Final):
            self._end_of_turn(event)
        elif isinstance(event, FinalFailed):
            host.send(
                {
                    "type": "Warning",
                    "request_id": self.request_id,
                    "code": "TRANSCRIPTION_FAILED",
                    "description": event.why,
                }
            )
            self._end_turn_with("", [], None, None, "timeout")
        elif isinstance(event, SessionFailed):
            host.send(self.error("internal", "this stream failed (%s); please reconnect" % event.why), error="internal")
            host.close(CLOSE_INTERNAL)

    def _end_of_turn(self, final: Final) -> None:
        eager = self.turn["eager"] if self.turn is not None else None
        # After an EagerEndOfTurn the turn's words are the ones it told (the final is that very
        # result; this holds it even so).
        if eager is not None:
            text, words = eager
        else:
            text, words = final.text, turn_words(final.text, final.start, final.end, final.confidence)
        self._end_turn_with(text, words, final.eot, final.end, TRIGGER.get(final.reason, "timeout"))

    def _end_turn_with(
        self, text: str, words: list[dict[str, Any]], eot: float | None, end: float | None, trigger: str
    ) -> None:
        at = end if end is not None else self.host.sessions[0].audio_s
        if self.turn is None:
            self.turn = {"start": at, "transcript": "", "words": [], "eager": None, "eot": 0.0}
        self.turn["eot"] = eot if eot is not None else (1.0 if trigger == "manual" else self.turn["eot"])
        self._send_turn("EndOfTurn", text, words, at, trigger=trigger)
        self.turn = None
        self.turn_index += 1
        self.told += 1
        later, self.later = self.later, []
        for event in later:
            self.on_event(0, event)

    def _send_turn(self, event: str, transcript: str, words: list[dict[str, Any]], end: float, **extra: Any) -> None:
        start = self.turn["start"] if self.turn is not None else end
        msg: dict[str, Any] = {
            "type": "TurnInfo",
            "request_id": self.request_id,
            "event": event,
            "turn_index": self.turn_index,
            "audio_window_start": round(start, 3),
            "audio_window_end": round(max(start, end), 3),
            "transcript": transcript,
            "words": words,
            "end_of_turn_confidence": round(float(self.turn["eot"] if self.turn is not None else 0.0), 4),
            **extra,
        }
        self.updated_at = end
        self.host.send(msg)

    async def on_timeout(self, code: str, message: str) -> None:
        await self.host.drain()
        self.host.send(self.error(code, message), error=code)
        self.host.close(CLOSE_BAD_REQUEST if code != "idle_timeout" else CLOSE_NORMAL)


def turn_words(text: str, start: float, end: float, confidence: float) -> list[dict[str, Any]]:
    """A result's words as Flux's, one per word of the transcript, spread evenly over its audio,
    each with the result's confidence (a Flux session's decodes align no words: FluxAdapter.on_open)."""
    return as_flux(spread(text, start, end, confidence))


def as_flux(words: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deepgram's words (deepgram_query) in Flux's shape."""
    return [
        {"word": w["punctuated_word"], "confidence": w["confidence"], "start": w["start"], "end": w["end"]}
        for w in words
    ]
