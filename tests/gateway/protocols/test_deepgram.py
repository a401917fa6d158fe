"""Deepgram's live API, spoken by the official `deepgram-sdk` (its async client, its environment
pointed at a gateway served in this process with the real tiny.en): real speech, the words
back, interims and finals, Finalize, CloseStream, two speakers on two channels, G.711, bad
parameters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import numpy as np
import pytest
import websockets
from deepgram import AsyncDeepgramClient
from deepgram.environment import DeepgramClientEnvironment

from common.audio import MODEL_RATE, float32_to_pcm16, pcm16_to_float32
from common.messages import JobKind
from decoder.engine import Engine
from gateway.protocols import g711
from stt.speech import SENTENCES, Speech, conversation
from stt.wer import wer
from tests.conftest import async_wait_for
from tests.gateway.conftest import Gateway
from tests.realspeech import direct_text, jfk, utterance

REAL = {"MODEL_NAME": "tiny.en", "DECODE_BATCH": 2}


class Stream:
    """An SDK socket and every message it received, as dicts, in order."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.messages: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.socket:
                self.messages.append(msg if isinstance(msg, dict) else msg.model_dump())
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def finals(self, channel: int = 0) -> list[dict[str, Any]]:
        return [m for m in self.of("Results") if m["is_final"] and m["channel_index"][0] == channel]

    def text(self, channel: int = 0) -> str:
        return " ".join(m["channel"]["alternatives"][0]["transcript"] for m in self.finals(channel)).strip()

    async def send_audio(self, pcm: bytes, bytes_per_s: int, speed: float = 4.0) -> None:
        step = bytes_per_s // 10
        for i in range(0, len(pcm), step):
            await self.socket.send_media(pcm[i : i + step])
            await asyncio.sleep(0.1 / speed)


def sdk_client(gateway: Gateway) -> AsyncDeepgramClient:
    """deepgram-sdk with every environment URL pointed at `gateway`."""
    ws_base = gateway.url.replace("/v1/listen", "")
    env = DeepgramClientEnvironment(base=gateway.http, production=ws_base, agent=ws_base, agent_rest=gateway.http)
    return AsyncDeepgramClient(api_key="dg-test", environment=env)


S = TypeVar("S", bound=Stream)


@contextlib.asynccontextmanager
async def streaming(connect: Any, cls: type[S]) -> AsyncIterator[S]:
    """An SDK `connect(...)` context as a `cls` stream reading every message."""
    async with connect as socket:
        stream = cls(socket)
        try:
            yield stream
        finally:
            stream.reader.cancel()


@contextlib.asynccontextmanager
async def listen(gateway: Gateway, **params: Any) -> AsyncIterator[Stream]:
    async with streaming(sdk_client(gateway).listen.v1.connect(model="nova-3", **params), Stream) as stream:
        yield stream


async def close_stream(stream: Stream, timeout: float = 60) -> None:
    await stream.socket.send_close_stream()
    await asyncio.wait_for(stream.closed.wait(), timeout)


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_sdk_stream_gives_interims_and_finals_with_words(gateway: Gateway, real_engine: Engine) -> None:
    speech = conversation(list(SENTENCES[:3]), pause_s=1.2)
    async with listen(
        gateway,
        encoding="linear16",
        sample_rate=16000,
        interim_results=True,
        vad_events=True,
        utterance_end_ms=1000,
        punctuate=True,
        smart_format=True,
    ) as s:
        await async_wait_for(lambda: s.of("Metadata"), 10, "Metadata at open")
        await s.send_audio(speech.pcm16, 32000)
        await close_stream(s)
    finals = s.finals()
    assert len(finals) == 3, s.text()
    assert all(f["speech_final"] and not f["from_finalize"] for f in finals)
    assert any(not m["is_final"] for m in s.of("Results")), "no interim"
    direct = wer(speech.text, direct_text(real_engine, speech))
    assert wer(speech.text, s.text()) <= direct + 0.1, s.text()
    for f, (start, end) in zip(finals, speech.spans):
        alt = f["channel"]["alternatives"][0]
        assert abs(f["start"] - start) < 0.5 and abs(f["start"] + f["duration"] - end) < 0.5
        assert f["channel_index"] == [0, 1] and f["metadata"]["model_info"]["name"] == "tiny.en"
        words = alt["words"]
        assert [w["punctuated_word"] for w in words] == alt["transcript"].split()
        assert all(start - 0.5 <= w["start"] <= w["end"] <= end + 0.5 for w in words)
        # Confidence from the decoder's word probabilities, not a constant.
        assert all(0 < w["confidence"] <= 1 for w in words) and len({w["confidence"] for w in words}) > 1
    assert len(s.of("SpeechStarted")) == 3
    assert len(s.of("UtteranceEnd")) == 3
    closing = s.of("Metadata")[-1]
    assert len(s.of("Metadata")) == 2 and closing["channels"] == 1 and closing["duration"] > speech.duration - 0.5
    assert s.messages[-1]["type"] == "Metadata"


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_finalize_mid_sentence_is_from_finalize_and_the_stream_goes_on(gateway: Gateway) -> None:
    speech = jfk()
    pcm = speech.pcm16
    half = len(pcm) // 2 // 2 * 2
    async with listen(gateway, encoding="linear16", sample_rate=16000, endpointing="false") as s:
        await s.send_audio(pcm[:half], 32000)
        await s.socket.send_finalize()
        await async_wait_for(lambda: s.finals(), 30, "the finalized part")
        await s.send_audio(pcm[half:], 32000)
        await s.socket.send_finalize()
        await async_wait_for(lambda: len(s.finals()) == 2, 30, "the second part")
        # Nothing being said: a Finalize still answers.
        await s.socket.send_finalize()
        await async_wait_for(lambda: len(s.finals()) == 3, 30, "the empty answer")
        await close_stream(s)
    first, second, empty = s.finals()
    assert all(f["from_finalize"] and not f["speech_final"] for f in (first, second, empty))
    assert empty["channel"]["alternatives"][0]["transcript"] == ""
    assert wer(speech.text, s.text()) <= 0.25, s.text()


def telephone(pcm: bytes, rate: int) -> bytes:
    """PCM16 at `rate` back at 16 kHz: what a decoder hears of it."""
    import soxr

    return float32_to_pcm16(soxr.resample(pcm16_to_float32(pcm), rate, MODEL_RATE))


def stereo(left: Speech, right: Speech, rate: int) -> bytes:
    """Two recordings as one interleaved stereo PCM16 stream at `rate`."""
    a, b = (np.frombuffer(x.pcm16_at(rate), "<i2") for x in (left, right))
    both = np.zeros((max(len(a), len(b)), 2), "<i2")
    both[: len(a), 0], both[: len(b), 1] = a, b
    return both.tobytes()


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_multichannel_gives_each_speaker_on_its_own_channel(gateway: Gateway, real_engine: Engine) -> None:
    """A stereo call: a man on the left, a woman on the right, at 8 kHz as telephony is."""
    left, right = utterance("6880-216547-0000"), utterance("1183-124566-0000")
    rate = 8000
    resampled = stereo(left, right, rate)
    async with listen(gateway, encoding="linear16", sample_rate=rate, channels=2, multichannel="true") as s:
        await s.send_audio(resampled, rate * 4)
        await close_stream(s)
    for channel, speech in ((0, left), (1, right)):
        got = s.text(channel)
        assert all(f["channel_index"] == [channel, 2] for f in s.finals(channel))
        # Held to a direct decode of what the channel carried: 8 kHz audio. tiny.en on telephone
        # audio is touchy (the right channel's utterance loses or keeps its first phrase with a
        # tenth of a second more or less of trailing silence): a phrase of slack, not a speaker.
        heard = Speech(pcm16_to_float32(telephone(speech.pcm16_at(rate), rate)), speech.spans, speech.texts)
        direct = wer(speech.text, direct_text(real_engine, heard))
        assert wer(speech.text, got) <= direct + 0.2, (channel, got)
    assert s.of("Metadata")[-1]["channels"] == 2


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
async def test_g711_streams_transcribe(gateway: Gateway, encoding: str) -> None:
    speech = jfk()
    data = g711.encode(speech.pcm16_at(8000), "ulaw" if encoding == "mulaw" else "alaw")
    async with listen(gateway, encoding=encoding, sample_rate=8000) as s:
        await s.send_audio(data, 8000, speed=6.0)
        await close_stream(s)
    assert wer(speech.text, s.text()) <= 0.2, s.text()


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_keyterms_reach_the_decoder(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.core import session as gateway_session

    queued: list[Any] = []
    original = gateway_session.Session._job

    def spy(self: Any, kind: JobKind, *args: Any, **kwargs: Any) -> Any:
        job = original(self, kind, *args, **kwargs)
        queued.append(job)
        return job

    monkeypatch.setattr(gateway_session.Session, "_job", spy)
    speech = conversation([SENTENCES[1]], tail_s=1.5)
    async with listen(
        gateway, encoding="linear16", sample_rate=16000, keyterm=["Stella", "Kubernetes"], keywords="Siobhan:2"
    ) as s:
        await s.send_audio(speech.pcm16, 32000)
        await close_stream(s)
    finals = [j for j in queued if j.kind == "final"]
    assert finals and all(j.hotwords == "Stella, Kubernetes, Siobhan" for j in finals)
    assert "Stella" in s.text()


async def raw(url: str, **kw: Any) -> tuple[list[dict[str, Any]], int | None]:
    msgs = []
    async with websockets.connect(url, **kw) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    msgs.append(json.loads(await ws.recv()))
    return msgs, ws.close_code


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("encoding=opus&sample_rate=48000", "unsupported_encoding"),
        ("encoding=linear16&sample_rate=4000", "bad_sample_rate"),
        ("encoding=linear16&interim_results=maybe", "bad_request"),
        ("encoding=linear16&channels=99", "bad_request"),
        ("encoding=linear16&endpointing=soon", "bad_request"),
        ("encoding=linear16&language=xx", "unknown_language"),
        ("encoding=linear16&keyterm=" + "x" * 100, "bad_keyterms"),
    ],
)
async def test_bad_parameters_are_refused_clearly(gateway: Gateway, query: str, code: str) -> None:
    msgs, close = await raw(gateway.url + "?model=nova-3&" + query)
    assert [m["type"] for m in msgs] == ["Error"] and msgs[0]["variant"] == code, msgs
    assert len(msgs[0]["description"]) < 200 and close == 4400


@pytest.mark.parametrize("gateway", [{"API_KEY": "dg-right-0123456789"}], indirect=True)
async def test_deepgram_auth_and_bad_messages(gateway: Gateway) -> None:
    url = gateway.url + "?model=nova-3&encoding=linear16&sample_rate=16000"
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, additional_headers={"Authorization": "Token dg-wrong"}):
            pass
    assert refused.value.response.status_code == 401
    # The browser way: subprotocols `token`, <key>.
    async with websockets.connect(url, subprotocols=["token", "dg-right-0123456789"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "token"
        assert json.loads(await ws.recv())["type"] == "Metadata"
        for bad in ("{nope", json.dumps({"type": "Dance"})):
            await ws.send(bad)
            error = json.loads(await ws.recv())
            assert error["type"] == "Error" and error["variant"] == "SchemaError", error
        await ws.send(b"\x00" * 3201)  # half a sample: kept for the next frame, not an error
        await ws.send(json.dumps({"type": "KeepAlive"}))
        await ws.send(json.dumps({"type": "CloseStream"}))
        end = json.loads(await ws.recv())
        assert end["type"] == "Metadata"
    assert ws.close_code == 1000
    async with websockets.connect(url, additional_headers={"Authorization": "Token dg-right-0123456789"}) as ws:
        assert json.loads(await ws.recv())["type"] == "Metadata"


@pytest.mark.parametrize("gateway", [{"IDLE_TIMEOUT_S": 1.0}], indirect=True)
async def test_a_silent_stream_is_closed_like_deepgram_does(gateway: Gateway) -> None:
    msgs, close = await raw(gateway.url + "?model=nova-3&encoding=linear16&sample_rate=16000")
    assert [m["type"] for m in msgs] == ["Metadata", "Error", "Metadata"] and close == 1011
    assert "NET-0001" in msgs[1]["description"]


async def test_a_wav_stream_needs_no_encoding(gateway: Gateway) -> None:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, conversation([SENTENCES[0]], tail_s=1.5).audio, MODEL_RATE, format="WAV", subtype="PCM_16")
    async with websockets.connect(gateway.url + "?model=nova-3&interim_results=false") as ws:
        assert json.loads(await ws.recv())["type"] == "Metadata"
        data = buf.getvalue()
        for i in range(0, len(data), 8000):
            await ws.send(data[i : i + 8000])
            await asyncio.sleep(0.02)
        await ws.send(json.dumps({"type": "CloseStream"}))
        msgs, last_at = [], 0.0
        async for raw_msg in ws:
            msgs.append(json.loads(raw_msg))
            last_at = time.monotonic()
        closed_after = time.monotonic() - last_at
    finals = [m for m in msgs if m["type"] == "Results" and m["is_final"]]
    assert len(finals) == 1 and finals[0]["channel"]["alternatives"][0]["transcript"]
    # The server closes once the closing Metadata is out, without waiting for the client to
    # close first (it used to wait 5 s, and LiveKit's plugin with it).
    assert msgs[-1]["type"] == "Metadata" and ws.close_code == 1000 and closed_after < 2.5, closed_after
