"""OpenAI's Realtime API in transcription mode, spoken by the official `openai` SDK (GA and
beta) to a gateway served in this process with the real tiny.en: real speech, the words back,
the event order of a turn, append-only deltas, turn detection, G.711, bad input."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import websockets

from decoder.engine import Engine
from gateway.core.events import Event, Interim
from gateway.protocols import g711
from gateway.protocols import openai as adapter
from stt.speech import SENTENCES, conversation
from stt.wer import wer
from tests.conftest import async_wait_for
from tests.gateway.conftest import Gateway
from tests.realspeech import direct_text, jfk

REAL = {"MODEL_NAME": "tiny.en", "DECODE_BATCH": 2}
TURN = (
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.input_audio_transcription.completed",
)
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


class Session:
    """An SDK connection and every event it received, as dicts, in order."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.events: list[dict[str, Any]] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(openai.OpenAIError, websockets.ConnectionClosed):
            async for event in self.conn:
                self.events.append(event.to_dict(warnings=False))

    def all_transcribed(self) -> bool:
        """Some turn was committed, and every committed turn has its transcript."""
        done = self.of(COMPLETED)
        return bool(done) and len(done) == len(self.of("input_audio_buffer.committed"))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def wait(self, kind: str, n: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        await async_wait_for(lambda: len(self.of(kind)) >= n, timeout, "%d %s" % (n, kind))
        return self.of(kind)

    async def send_audio(self, pcm: bytes, rate: int, speed: float = 4.0, law: str = "") -> None:
        """PCM16 at `rate`, in 100 ms appends paced at `speed` x real time (G.711 encoded if `law`)."""
        step = rate * 2 // 10
        for i in range(0, len(pcm), step):
            chunk = pcm[i : i + step]
            data = g711.encode(chunk, law) if law else chunk
            await self.conn.input_audio_buffer.append(audio=base64.b64encode(data).decode())
            await asyncio.sleep(0.1 / speed)


def client(gateway: Gateway, api_key: str = "sk-test") -> openai.AsyncOpenAI:
    """The SDK pointed at the gateway (the beta client needs its WebSocket base URL too)."""
    return openai.AsyncOpenAI(
        base_url=gateway.http + "/v1",
        websocket_base_url=gateway.url.replace("/v1/listen", "/v1"),
        api_key=api_key,
        max_retries=0,
    )


@contextlib.asynccontextmanager
async def ga(gateway: Gateway, **session: Any) -> AsyncIterator[Session]:
    async with client(gateway).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        s = Session(conn)
        await s.wait("session.created", timeout=10)
        if session:
            await conn.session.update(session={"type": "transcription", **session})  # type: ignore[arg-type]
            await s.wait("session.updated", timeout=10)
        try:
            yield s
        finally:
            s.reader.cancel()


def pcm_audio(rate: int = 24000) -> dict[str, Any]:
    return {"format": {"type": "audio/pcm", "rate": rate}}


def transcripts(s: Session) -> list[str]:
    return [e["transcript"] for e in s.of(COMPLETED)]


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_ga_sdk_turns_in_order_with_append_only_deltas(
    gateway: Gateway, real_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    speech = conversation(list(SENTENCES[:3]), pause_s=1.2)
    interims: dict[str, list[str]] = {}  # item -> the interim texts the gateway had when deltas went out
    seen: list[tuple[str, str]] = []
    render = adapter.OpenAIAdapter.on_event

    def spy(self: adapter.OpenAIAdapter, channel: int, event: Event) -> None:
        if isinstance(event, Interim) and event.utt in self.items:
            interims.setdefault(self.items[event.utt], []).append(event.text)
        render(self, channel, event)

    monkeypatch.setattr(adapter.OpenAIAdapter, "on_event", spy)
    audio_in = {**pcm_audio(), "transcription": {"model": "whisper-1", "language": "en"}}
    async with ga(gateway, audio={"input": audio_in}) as s:
        assert s.of("session.updated")[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        await s.send_audio(speech.pcm16_at(24000), 24000)
        done = await s.wait(COMPLETED, 3)
    assert len(done) == 3 and s.of("error") == []
    items = [e["item_id"] for e in done]
    assert len(set(items)) == 3
    for i, item in enumerate(items):
        mine = [e for e in s.events if e.get("item_id") == item or e.get("item", {}).get("id") == item]
        kinds = [e["type"] for e in mine if e["type"] != DELTA]
        assert kinds == list(TURN), kinds
        # Deltas come before the speech stops, each one extends the text: only stable text.
        deltas = [e for e in mine if e["type"] == DELTA]
        stopped = next(j for j, e in enumerate(mine) if e["type"] == "input_audio_buffer.speech_stopped")
        assert all(mine.index(d) < stopped for d in deltas)
        said = "".join(d["delta"] for d in deltas)
        if said:
            seen.append((said, done[i]["transcript"]))
            # What the deltas said is a prefix of what the gateway's interims said then.
            assert any(text.startswith(said) for text in interims[item]), (said, interims[item])
        committed = next(e for e in mine if e["type"] == "input_audio_buffer.committed")
        assert committed["previous_item_id"] == (items[i - 1] if i else None)
    assert seen, "no deltas at all"
    direct = wer(speech.text, direct_text(real_engine, speech))
    assert wer(speech.text, " ".join(transcripts(s))) <= direct + 0.1, transcripts(s)
    started = s.of("input_audio_buffer.speech_started")
    for e, (begin, _end) in zip(started, speech.spans):
        assert abs(e["audio_start_ms"] / 1000 - begin) < 0.5  # the pre-roll is in the turn
    assert all(e["event_id"].startswith("event_") for e in s.events)


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_beta_sdk_transcription_session_hears_recorded_speech(gateway: Gateway) -> None:
    speech = jfk()
    async with client(gateway).beta.realtime.connect(
        model="gpt-4o-transcribe", extra_query={"intent": "transcription"}
    ) as conn:
        s = Session(conn)
        await s.wait("transcription_session.created", timeout=10)
        await conn.transcription_session.update(
            session={
                "input_audio_format": "pcm16",
                "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 600},
            }
        )
        updated = (await s.wait("transcription_session.updated", timeout=10))[0]["session"]
        assert updated["turn_detection"]["silence_duration_ms"] == 600 and updated["input_audio_format"] == "pcm16"
        await s.send_audio(speech.pcm16_at(24000), 24000)
        await async_wait_for(s.all_transcribed, 60, "every committed turn's transcript")
        s.reader.cancel()
    assert s.of("conversation.item.created") and not s.of("conversation.item.added")  # beta names
    assert wer(speech.text, " ".join(transcripts(s))) <= 0.15, transcripts(s)


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_server_vad_silence_decides_the_turns(gateway: Gateway, real_engine: Engine) -> None:
    """Two sentences 1.2 s apart: two turns with the default endpointer, one with a 2 s
    server_vad silence."""
    speech = conversation(list(SENTENCES[4:6]), pause_s=1.2, tail_s=3.0)
    direct = wer(speech.text, direct_text(real_engine, speech))
    long_vad = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 2000}
    counts = []
    for turn in ({"type": "semantic_vad", "eagerness": "auto"}, long_vad):
        async with ga(gateway, audio={"input": {**pcm_audio(), "turn_detection": turn}}) as s:
            await s.send_audio(speech.pcm16_at(24000), 24000)
            await async_wait_for(s.all_transcribed, 60, "every committed turn's transcript")
            counts.append(len(s.of(COMPLETED)))
            assert wer(speech.text, " ".join(transcripts(s))) <= direct + 0.15, transcripts(s)
    assert counts == [2, 1]


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_without_turn_detection_only_a_commit_ends_a_turn(gateway: Gateway, real_engine: Engine) -> None:
    speech = conversation(list(SENTENCES[4:6]), pause_s=1.2, tail_s=1.0)
    async with ga(gateway, audio={"input": {**pcm_audio(), "turn_detection": None}}) as s:
        await s.send_audio(speech.pcm16_at(24000), 24000)
        await asyncio.sleep(1.0)  # long after the silence that would have ended a turn
        assert s.of(COMPLETED) == [] and s.of("input_audio_buffer.speech_started") == []
        await s.conn.input_audio_buffer.commit()
        [done] = await s.wait(COMPLETED)
        # An empty buffer cannot be committed: an error, and the session goes on.
        await s.conn.input_audio_buffer.commit()
        [error] = await s.wait("error")
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert error["error"]["type"] == "invalid_request_error"
        await s.send_audio(conversation([SENTENCES[0]], tail_s=0.5).pcm16_at(24000), 24000)
        await s.conn.input_audio_buffer.commit()
        await s.wait(COMPLETED, 2)
    assert wer(speech.text, done["transcript"]) <= wer(speech.text, direct_text(real_engine, speech)) + 0.15, done
    assert s.of("input_audio_buffer.speech_stopped") == []


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
@pytest.mark.parametrize(("kind", "law"), [("audio/pcmu", "ulaw"), ("audio/pcma", "alaw")])
async def test_g711_audio_transcribes(gateway: Gateway, kind: str, law: str) -> None:
    speech = jfk()
    async with ga(gateway, audio={"input": {"format": {"type": kind}, "transcription": {"language": "en"}}}) as s:
        await s.send_audio(speech.pcm16_at(8000), 8000, speed=6.0, law=law)
        await async_wait_for(s.all_transcribed, 60, "every committed turn's transcript")
    assert wer(speech.text, " ".join(transcripts(s))) <= 0.2, transcripts(s)


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_clear_discards_the_turn_in_progress(gateway: Gateway, real_engine: Engine) -> None:
    first = conversation([SENTENCES[0]], tail_s=0.0)
    second = conversation([SENTENCES[4]], lead_s=0.0, tail_s=1.5)
    async with ga(gateway, audio={"input": pcm_audio()}) as s:
        await s.send_audio(first.pcm16_at(24000), 24000)
        await s.conn.input_audio_buffer.clear()
        await s.wait("input_audio_buffer.cleared")
        await s.send_audio(second.pcm16_at(24000), 24000)
        [done] = await s.wait(COMPLETED)
        await asyncio.sleep(0.5)
    assert len(s.of(COMPLETED)) == 1
    assert wer(second.text, done["transcript"]) <= wer(second.text, direct_text(real_engine, second)) + 0.15, done


async def raw_events(ws: Any, until: str, timeout: float = 10) -> list[dict[str, Any]]:
    events = []
    async with asyncio.timeout(timeout):
        while True:
            events.append(json.loads(await ws.recv()))
            if events[-1]["type"] == until:
                return events


@pytest.mark.parametrize("gateway", [{"API_KEY": "sk-right-0123456789"}], indirect=True)
async def test_bad_input_gets_openai_errors_and_the_session_goes_on(gateway: Gateway) -> None:
    url = gateway.url.replace("/v1/listen", "/v1/realtime")
    # A browser's way to send its key: subprotocols.
    async with websockets.connect(
        url + "?intent=transcription",
        subprotocols=["realtime", "openai-insecure-api-key.sk-right-0123456789"],  # type: ignore[list-item]
    ) as ws:
        assert ws.subprotocol == "realtime"
        await raw_events(ws, "session.created")
        for bad, code in (
            ("{nope", "invalid_json"),
            ({"type": "response.create"}, "unsupported_event"),
            ({"type": "session.update", "session": {"type": "realtime"}}, "unsupported_session_type"),
            (
                {"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/opus"}}}}},
                "invalid_audio_format",
            ),
            (
                {
                    "type": "session.update",
                    "session": {
                        "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": -5}}}
                    },
                },
                "invalid_turn_detection",
            ),
            (
                {"type": "session.update", "session": {"audio": {"input": {"transcription": {"language": "xx"}}}}},
                "unknown_language",
            ),
            ({"type": "input_audio_buffer.append", "audio": "***"}, "invalid_audio"),
            ({"type": "input_audio_buffer.commit"}, "input_audio_buffer_commit_empty"),
        ):
            await ws.send(bad if isinstance(bad, str) else json.dumps(bad))
            [*_, error] = await raw_events(ws, "error")
            assert error["error"]["code"] == code and len(error["error"]["message"]) < 200, error
        # Binary frames are not this protocol's audio.
        await ws.send(b"\x00\x01")
        [*_, error] = await raw_events(ws, "error")
        assert error["error"]["code"] == "invalid_event"
        # The session is unharmed: an update still applies.
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
                }
            )
        )
        [*_, updated] = await raw_events(ws, "session.updated")
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
    for headers, subprotocols in (({"Authorization": "Bearer sk-wrong"}, None), (None, ["realtime"])):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=headers, subprotocols=subprotocols):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus) as refused:  # the SDK with a wrong key
        async with client(gateway, "sk-wrong").realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.recv()
    assert refused.value.response.status_code == 401


async def test_only_transcription_sessions_are_served(gateway: Gateway) -> None:
    url = gateway.url.replace("/v1/listen", "/v1/realtime")
    async with websockets.connect(url + "?model=gpt-realtime&intent=conversation") as ws:
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["error"]["code"] == "unsupported_intent"
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 4400
