"""Deepgram Flux (`/v2/listen`), spoken by the official `deepgram-sdk` (`listen.v2`, its
environment pointed at a gateway served in this process with the real tiny.en and the real
end-of-turn model): turns with their words, Flux's state rules, Configure, ForceEndTurn, the
silence cap without the model, bad input in Flux's error shape."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from stt.speech import SENTENCES, conversation
from stt.wer import wer
from tests.conftest import async_wait_for
from tests.gateway.conftest import Gateway
from tests.gateway.protocols.test_deepgram import Stream, close_stream, sdk_client, streaming

REAL = {"MODEL_NAME": "tiny.en", "DECODE_BATCH": 2}
TURNS = {**REAL, "turns": True, "EOT_MODEL": "on"}
# The silence rule a second into a pause: the model's "done" (asked 200 ms into it, answered with
# the speculative final's words) ends the turn first even on a busy 2-core machine, where at the
# default 400 ms the silence rule won every race (CI: three turns ended by "timeout").
PATIENT = {**TURNS, "FINAL_SILENCE_MS_MIN": 1000, "FINAL_SILENCE_MS_MAX": 1200}


class FluxStream(Stream):
    def turn_events(self, event: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "TurnInfo" and event in (None, m["event"])]


@contextlib.asynccontextmanager
async def flux(gateway: Gateway, **params: Any) -> AsyncIterator[FluxStream]:
    params.setdefault("encoding", "linear16")
    params.setdefault("sample_rate", 16000)
    connect = sdk_client(gateway).listen.v2.connect(model="flux-general-en", **params)
    async with streaming(connect, FluxStream) as stream:
        yield stream


async def close(stream: Stream) -> None:
    await close_stream(stream, 30)


def check_flux_rules(stream: FluxStream) -> None:
    """Sequence ids in order; within each turn: StartOfTurn first, an EagerEndOfTurn never
    empty, TurnResumed only after one, an EndOfTurn after an unresumed EagerEndOfTurn repeating
    its transcript; turn_index up by one after each EndOfTurn."""
    assert [m["sequence_id"] for m in stream.messages] == list(range(len(stream.messages)))
    assert stream.messages[0]["type"] == "Connected"
    eager: str | None = None
    index = 0
    started = False
    for m in stream.turn_events():
        assert m["turn_index"] == index, m
        if m["event"] == "StartOfTurn":
            assert not started
            started, eager = True, None
        elif m["event"] == "EagerEndOfTurn":
            assert m["transcript"], "an EagerEndOfTurn is never empty"
            eager = m["transcript"]
        elif m["event"] == "TurnResumed":
            assert eager is not None, "TurnResumed only after an EagerEndOfTurn"
            eager = None
        elif m["event"] == "EndOfTurn":
            if eager is not None:
                assert m["transcript"] == eager, "EndOfTurn repeats the EagerEndOfTurn"
            assert m["trigger"] in ("model", "manual", "timeout")
            index, started, eager = index + 1, False, None


@pytest.mark.parametrize("gateway", [PATIENT], indirect=True)
async def test_turns_through_the_sdk_end_by_the_model_with_their_words(gateway: Gateway) -> None:
    speech = conversation(list(SENTENCES[:3]), pause_s=1.5, tail_s=1.5)
    # The model's answers to these three espeak-ng sentences: 0.54, 0.92, 0.70.
    async with flux(gateway, eot_threshold=0.5, eager_eot_threshold=0.3) as s:
        assert gateway.state.turn_model
        await s.send_audio(speech.pcm16, 32000, speed=1.0)
        await async_wait_for(lambda: len(s.turn_events("EndOfTurn")) >= 3, 60, "three turns")
        await close(s)
    check_flux_rules(s)
    ends = s.turn_events("EndOfTurn")
    assert [e["turn_index"] for e in ends] == [0, 1, 2]
    for end, text in zip(ends, speech.texts):
        assert wer(text, end["transcript"]) <= 0.5, (text, end["transcript"])
        # One per word of the transcript, in its order, each with the decode's confidence.
        assert [w["word"] for w in end["words"]] == end["transcript"].split(), end
        assert all(0.0 < w["confidence"] <= 1.0 for w in end["words"]), end["words"]
        assert 0.0 <= end["end_of_turn_confidence"] <= 1.0
    assert any(e["trigger"] == "model" for e in ends), [e["trigger"] for e in ends]
    updates = [u for u in s.turn_events("Update") if u["transcript"]]
    assert updates and all(u["words"] for u in updates), "Updates carry their words (LiveKit shows none without)"


@pytest.mark.parametrize("gateway", [TURNS], indirect=True)
async def test_configure_is_taken_or_refused_whole_and_force_end_turn_ends_the_turn(gateway: Gateway) -> None:
    speech = conversation([SENTENCES[1]], tail_s=0.0)
    async with flux(gateway) as s:
        await s.socket.send_configure(
            {"type": "Configure", "thresholds": {"eot_threshold": 0.9, "eot_timeout_ms": 4000}}
        )
        await s.socket.send_configure({"type": "Configure", "thresholds": {"eot_threshold": 2}})
        await s.socket.send_configure(
            {"type": "Configure", "thresholds": {"eot_threshold": 0.6, "eager_eot_threshold": 0.8}}
        )
        await s.socket.send_configure({"type": "Configure", "keyterms": ["Stella"]})
        await async_wait_for(lambda: len(s.of("ConfigureSuccess")) + len(s.of("ConfigureFailure")) >= 4, 10, "answers")
        [ok, kt] = s.of("ConfigureSuccess")
        assert ok["thresholds"]["eot_threshold"] == 0.9 and ok["thresholds"]["eot_timeout_ms"] == 4000
        assert kt["keyterms"] == ["Stella"] and kt["thresholds"]["eot_threshold"] == 0.9  # kept
        failures = s.of("ConfigureFailure")
        assert [f["code"] for f in failures] == ["INVALID_EOT_THRESHOLD", "INVALID_EAGER_EOT_THRESHOLD"]
        await s.send_audio(speech.pcm16[: len(speech.pcm16) * 2 // 3 // 2 * 2], 32000, speed=2.0)
        await s.socket.send_force_end_turn()
        await async_wait_for(lambda: s.turn_events("EndOfTurn"), 30, "the forced end of turn")
        [end] = s.turn_events("EndOfTurn")
        assert end["trigger"] == "manual" and "stella" in end["transcript"].lower()
        await close(s)
    check_flux_rules(s)


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_without_the_model_turns_end_on_silence_as_a_timeout(gateway: Gateway) -> None:
    speech = conversation([SENTENCES[0]], tail_s=1.5)
    async with flux(gateway) as s:
        await s.send_audio(speech.pcm16, 32000, speed=2.0)
        await async_wait_for(lambda: s.turn_events("EndOfTurn"), 30, "the turn's end")
        await close(s)
    [end] = s.turn_events("EndOfTurn")
    assert end["trigger"] == "timeout" and wer(speech.texts[0], end["transcript"]) <= 0.5


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"eot_threshold": 0.2}, "INVALID_EOT_THRESHOLD"),
        ({"eager_eot_threshold": 0.95}, "INVALID_EAGER_EOT_THRESHOLD"),
        ({"eot_timeout_ms": 100}, "INVALID_EOT_TIMEOUT_MS"),
        ({"encoding": "opus"}, "UNSUPPORTED_ENCODING"),
    ],
)
async def test_bad_parameters_get_flux_s_error_and_a_close(gateway: Gateway, params: dict[str, Any], code: str) -> None:
    query = "&".join("%s=%s" % kv for kv in {"model": "flux-general-en", "sample_rate": 16000, **params}.items())
    url = gateway.url.replace("/v1/listen", "/v2/listen") + "?" + query
    async with websockets.connect(url) as ws:
        msgs = []
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                msgs.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    assert msgs[-1]["type"] == "Error" and msgs[-1]["code"] == code, msgs
    assert ws.close_code == 4400
