"""Deepgram's live streaming API (`/v1/listen` with Deepgram's query parameters, as the Deepgram
SDK builds it; `/deepgram/v1/listen` too, for a base URL with a path).

Binary frames are audio (`encoding` linear16, mulaw or alaw at `sample_rate`, `channels`
interleaved; with no `encoding`, a WAV stream whose header says it); text frames are `KeepAlive`,
`Finalize`, `CloseStream` and `Configure`. Out: `Metadata` at open and at the end, `Results`
(interims `is_final: false`; finals `is_final: true`, `speech_final` at an endpoint,
`from_finalize` when `Finalize` caused it), `SpeechStarted` (`vad_events`), `UtteranceEnd`
(`utterance_end_ms`). With `multichannel=true` each channel is a session of its own and its
results carry `channel_index: [c, n]`.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

import numpy as np

from common.protocol import CLOSE_INTERNAL, CLOSE_NORMAL
from gateway.core.events import (
    EndReason,
    Event,
    Final,
    FinalFailed,
    Interim,
    SessionFailed,
    SpeechStarted,
    SpeechStopped,
)
from gateway.core.options import (
    BadInput,
    SessionOptions,
    Turn,
    check_keyterms,
    check_rate,
    check_served_language,
    excerpt,
)
from gateway.protocols import g711
from gateway.protocols.base import Host
from gateway.protocols.deepgram_query import (
    ENCODINGS,
    IDLE_S,
    MAX_CHANNELS,
    MIN_ENDPOINTING_MS,
    flag,
    keyterms,
    language,
    number,
    spoken_words,
    spread,
)
from gateway.protocols.wav import wav_header


class DeepgramAdapter:
    name = "deepgram"
    start_required = False

    def __init__(self, host: Host) -> None:
        self.host = host
        self.request_id = str(uuid.uuid4())
        self.created = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.encoding: str | None = None
        self.rate = 16000
        self.channels = 1
        self.multichannel = False
        self.interim = False
        self.vad_events = False
        self.utterance_end_ms: int | None = None
        self.header = bytearray()  # a WAV stream's header, until it is whole
        self.carry = b""  # a partial sample frame, kept for the next message
        self.last_word_end: dict[int, float] = {}  # per channel, while its UtteranceEnd is due
        self.finalizing: set[int] = set()  # channels asked to Finalize that have not ended yet

    @property
    def streams(self) -> int:
        return self.channels if self.multichannel else 1

    # --- the adapter protocol -----------------------------------------------------------

    def idle_timeout_s(self) -> float:
        return min(IDLE_S, self.host.settings.IDLE_TIMEOUT_S)

    def stamp(self, msg: dict[str, Any], n: int) -> None:
        """Deepgram's messages carry no sequence number."""

    def error(self, code: str, message: str) -> dict[str, Any]:
        return {"type": "Error", "variant": code, "description": message, "message": message}

    async def on_open(self) -> None:
        q = self.host.query
        encoding = q.get("encoding")
        if encoding is not None and encoding not in ENCODINGS:
            raise BadInput(
                "unsupported_encoding",
                "encoding %s is not supported: send raw linear16, mulaw or alaw (or a WAV stream with no encoding)"
                % excerpt(encoding),
                fatal=True,
            )
        self.encoding = encoding
        rate = number(q, "sample_rate", 0, 10**6)
        self.rate = check_rate(rate if rate is not None else (8000 if encoding in ("mulaw", "alaw") else 16000))
        self.channels = number(q, "channels", 1, MAX_CHANNELS) or 1
        self.multichannel = flag(q, "multichannel", False)
        self.interim = flag(q, "interim_results", False)
        self.vad_events = flag(q, "vad_events", False)
        self.utterance_end_ms = number(q, "utterance_end_ms", 1000, 5000)
        for accepted in ("punctuate", "smart_format", "numerals", "profanity_filter", "filler_words"):
            flag(q, accepted, False)  # accepted (Whisper punctuates and formats anyway), checked
        diarize = flag(q, "diarize", False)
        lang = language(q)
        check_served_language(lang, self.host.english_only)
        options = SessionOptions(
            sample_rate=self.rate,
            lang=lang,
            interim=self.interim,
            word_timestamps=True,  # Deepgram's finals always carry words
            hotwords=keyterms(q),
            turn=self._turn(q.get("endpointing")),
            diarize=diarize,
        )
        await self.host.open(options, self.streams)
        self.host.send(self._metadata())

    def _turn(self, endpointing: str | None) -> Turn | None:
        pre_roll = self.host.settings.PRE_ROLL_MS
        if endpointing is None or endpointing.lower() == "true":
            return None  # the service's adaptive endpointer
        if endpointing.lower() == "false":
            return Turn(0, 0, pre_roll, on_silence=False)
        try:
            ms = int(endpointing)
        except ValueError:
            raise BadInput("bad_request", "endpointing must be false or milliseconds", fatal=True) from None
        if not 0 <= ms <= 10000:
            raise BadInput("bad_request", "endpointing must be 0-10000 ms", fatal=True)
        ms = max(ms, MIN_ENDPOINTING_MS)
        return Turn(ms, ms, pre_roll)

    async def on_text(self, text: str) -> bool:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            raise BadInput("SchemaError", "a text message must be JSON: KeepAlive, Finalize, CloseStream") from None
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "KeepAlive":
            return True
        if kind == "Finalize":
            self.finalizing = set(range(self.streams))
            ended = await self.host.finalize()
            if ended is None:
                return False
            for channel in sorted(self.finalizing):
                # Nothing was being said: the client still hears that its Finalize is done.
                self.host.send(self._results(channel, "", 0.0, 0.0, [], 0.0, True, False, True))
            self.finalizing.clear()
            return True
        if kind == "CloseStream":
            await self.host.drain()
            self._utterance_ends(force=True)
            self.host.send(self._metadata())
            # Closed at once: Deepgram's clients wait for the close (LiveKit's plugin finished its
            # stream 7.5 s after its input while this waited 5 s for the client to close first).
            self.host.finish()
            self.host.close(CLOSE_NORMAL)
            return False
        if kind == "Configure":
            terms = check_keyterms(msg.get("keyterms"), "keyterms")
            for session in self.host.sessions:
                session.options.hotwords = terms
            self.host.send({"type": "ConfigureSuccess", "request_id": self.request_id, "keyterms": list(terms)})
            return True
        raise BadInput(
            "SchemaError", "unknown message %s (KeepAlive, Finalize, CloseStream, Configure)" % excerpt(kind)
        )

    async def on_binary(self, data: bytes) -> bool:
        if self.encoding is None:
            data = self._after_header(data)
            if not data:
                return True
        width = ENCODINGS[self.encoding or "linear16"] * self.channels
        data = self.carry + data
        whole = len(data) - len(data) % width
        data, self.carry = data[:whole], data[whole:]
        if not data:
            return True
        if self.encoding in ("mulaw", "alaw"):
            data = g711.decode(data, "ulaw" if self.encoding == "mulaw" else "alaw")
        samples = np.frombuffer(data, dtype="<i2").reshape(-1, self.channels)
        if self.multichannel:
            pcm = [np.ascontiguousarray(samples[:, c]).tobytes() for c in range(self.channels)]
        elif self.channels > 1:
            pcm = [samples.mean(axis=1).astype("<i2").tobytes()]
        else:
            pcm = [data]
        going = await self.host.audio(pcm)
        self._utterance_ends()
        return going

    def _after_header(self, data: bytes) -> bytes:
        """No `encoding`: the stream must be WAV (PCM16 or G.711); its header sets the format.
        The audio after the header is returned."""
        if self.encoding is not None:
            return data
        self.header += data
        found = wav_header(self.header)
        if found is None:
            return b""
        fmt, start = found
        self._wav_format(*fmt)
        rest = bytes(self.header[start:])
        self.header.clear()
        return rest

    def _wav_format(self, tag: int, channels: int, rate: int, bits: int) -> None:
        codec = {(1, 16): "linear16", (7, 8): "mulaw", (6, 8): "alaw"}.get((tag, bits))
        if codec is None or not 1 <= channels <= MAX_CHANNELS:
            raise BadInput(
                "unsupported_encoding", "WAV of format %d, %d bits is not supported" % (tag, bits), fatal=True
            )
        if self.multichannel and channels != self.channels:
            raise BadInput(
                "bad_request", "the WAV has %d channels, the query says %d" % (channels, self.channels), fatal=True
            )
        self.encoding, self.channels, self.rate = codec, channels, check_rate(rate)
        for session in self.host.sessions:
            session.set_rate(rate)

    def on_event(self, channel: int, event: Event) -> None:
        host = self.host
        if isinstance(event, SpeechStarted):
            if self.vad_events:
                host.send(
                    {"type": "SpeechStarted", "channel": [channel, self.streams], "timestamp": round(event.start, 3)}
                )
        elif isinstance(event, SpeechStopped):
            if event.reason is EndReason.FINALIZE:
                self.finalizing.discard(channel)
        elif isinstance(event, Interim):
            if self.interim:
                words = spread(event.text, event.start, event.end, event.confidence)
                host.send(
                    self._results(
                        channel, event.text, event.start, event.end, words, event.confidence, False, False, False
                    )
                )
        elif isinstance(event, Final):
            words = spoken_words(event.words or [])
            if event.speaker is not None:
                # Deepgram's diarize: each word's speaker (a final is one speaker's: its utterance).
                confidence_of = event.speaker_confidence if event.speaker_confidence is not None else 1.0
                words = [{**w, "speaker": event.speaker, "speaker_confidence": confidence_of} for w in words]
            confidence = float(np.mean([w["confidence"] for w in words])) if words else event.confidence
            from_finalize = event.reason is EndReason.FINALIZE
            host.send(
                self._results(
                    channel,
                    event.text,
                    event.start,
                    event.end,
                    words,
                    confidence,
                    True,
                    event.reason in (EndReason.SILENCE, EndReason.MODEL),
                    from_finalize,
                )
            )
            if self.utterance_end_ms is not None and event.text:
                self.last_word_end[channel] = words[-1]["end"] if words else event.end
                self._utterance_ends()
        elif isinstance(event, FinalFailed):
            host.send(
                self.error("final_failed", "utterance %d could not be transcribed: %s" % (event.utt, event.why)),
                error="final_failed",
            )
        elif isinstance(event, SessionFailed):
            host.send(self.error("internal", "this stream failed (%s); please reconnect" % event.why), error="internal")

    async def on_timeout(self, code: str, message: str) -> None:
        await self.host.drain()
        if code == "idle_timeout":
            message = "no audio or KeepAlive within %.0f s (NET-0001)" % self.idle_timeout_s()
        self.host.send(self.error(code, message), error=code)
        self.host.send(self._metadata())
        self.host.close(
            CLOSE_INTERNAL if code == "idle_timeout" else CLOSE_NORMAL, "NET-0001" if code == "idle_timeout" else ""
        )

    # --- messages -------------------------------------------------------------------------

    def _utterance_ends(self, force: bool = False) -> None:
        """UtteranceEnd for each channel whose last final word ended utterance_end_ms ago with
        no speech since."""
        if self.utterance_end_ms is None:
            return
        for channel, last in list(self.last_word_end.items()):
            session = self.host.sessions[channel]
            quiet = not session.speaking and session.audio_s - last >= self.utterance_end_ms / 1000.0
            if quiet or force:
                del self.last_word_end[channel]
                self.host.send(
                    {"type": "UtteranceEnd", "channel": [channel, self.streams], "last_word_end": round(last, 3)}
                )

    def _model(self) -> tuple[str, dict[str, str]]:
        name = self.host.model_name
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "stt-cluster/" + name)), {
            "name": name,
            "version": "stt-cluster",
            "arch": "whisper",
        }

    def _metadata(self) -> dict[str, Any]:
        model_uuid, info = self._model()
        duration = max((s.audio_s for s in self.host.sessions), default=0.0)
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": "",
            "created": self.created,
            "duration": round(duration, 3),
            "channels": self.channels,
            "models": [model_uuid],
            "model_info": {model_uuid: info},
        }

    def _results(
        self,
        channel: int,
        transcript: str,
        start: float,
        end: float,
        words: list[dict[str, Any]],
        confidence: float,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
    ) -> dict[str, Any]:
        model_uuid, info = self._model()
        return {
            "type": "Results",
            "channel_index": [channel, self.streams],
            "start": round(start, 3),
            "duration": round(max(0.0, end - start), 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [{"transcript": transcript, "confidence": round(confidence, 4), "words": words}]
            },
            "metadata": {"request_id": self.request_id, "model_info": info, "model_uuid": model_uuid},
        }
