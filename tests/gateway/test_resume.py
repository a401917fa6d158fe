"""A session outlives its gateway: two `stt gateway` processes on one Redis behind a proxy (a
load balancer's stand-in), a decoder with the real tiny.en, and a client (the client library,
resume on) whose gateway is SIGKILLed at the worst moments. Every sentence comes back exactly
once, with its words, in order; and a resume that must not be is refused."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
import websockets

from client.stream import ClientError, Stream, connect
from stt.speech import SENTENCES, Speech, conversation
from stt.wer import wer
from tests.conftest import async_wait_for
from tests.gateway.conftest import Pair
from tests.proxy import Proxy

pytestmark = pytest.mark.slow


async def stream_through(
    url: str, speech: Speech, during: Callable[[Stream, dict[str, Any]], Any] | None = None
) -> tuple[list[dict[str, Any]], Stream]:
    """The session's messages (what the caller sees) while `during(stream, msg)` runs on each."""
    got: list[dict[str, Any]] = []
    async with connect(url, sample_rate=16000, lang="en") as stream:
        async for msg in stream.receive_while(stream.send_audio(speech.pcm16, speed=1.0)):
            got.append(msg)
            if during is not None:
                result = during(stream, msg)
                if asyncio.iscoroutine(result):
                    await result
    return got, stream


def check_once_each(got: list[dict[str, Any]], speech: Speech) -> None:
    """Every sentence's final arrives once, in order, with its words; interims keep their rules."""
    finals = [m for m in got if m["type"] == "final"]
    assert [f["utterance"] for f in finals] == list(range(len(finals))), finals
    assert not [m for m in got if m["type"] == "error"], got
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(set(seqs)), "a message seen twice, or out of order"
    texts = [f["text"] for f in finals if f["text"]]
    assert len(texts) == len(speech.texts), texts
    for text, said in zip(speech.texts, texts):
        assert wer(text, said) <= 0.5, (text, said)
    assert wer(speech.text, " ".join(texts)) <= 0.3, texts


def talk(n: int = 3, pause_s: float = 1.5) -> Speech:
    return conversation(list(SENTENCES[:n]), pause_s=pause_s, tail_s=1.5)


async def test_a_gateway_killed_mid_utterance(pair: Pair, proxy: Proxy) -> None:
    speech = talk()
    first = pair.ports[0]
    killed = [False]

    def kill_mid_second_sentence(stream: Stream, msg: dict[str, Any]) -> None:
        if not killed[0] and msg["type"] == "interim" and msg["utterance"] == 1:
            killed[0] = True
            pair.kill(first)

    got, stream = await stream_through(proxy.url, speech, kill_mid_second_sentence)
    assert killed[0] and stream.resumes == 1
    assert proxy.routed[-1] == pair.ports[1], "resumed on the other gateway"
    check_once_each(got, speech)


async def test_a_gateway_killed_while_a_final_is_pending(pair: Pair, proxy: Proxy) -> None:
    """The decoder is frozen (SIGSTOP) while the first sentence's final is owed; its gateway dies;
    the decoder comes back: the final reaches the client through the other gateway."""
    speech = talk(2, pause_s=2.5)
    first = pair.ports[0]
    state: dict[str, Any] = {"frozen": False}

    async def freeze_then_kill(stream: Stream, msg: dict[str, Any]) -> None:
        if not state["frozen"] and msg["type"] == "interim" and msg["utterance"] == 0:
            state["frozen"] = True
            os.kill(pair.decoder.pid, signal.SIGSTOP)
            await asyncio.sleep(speech.spans[0][1] - speech.spans[0][0] + 1.0)  # its end of speech passes
            pair.kill(first)
            await asyncio.sleep(0.5)
            os.kill(pair.decoder.pid, signal.SIGCONT)

    try:
        got, stream = await stream_through(proxy.url, speech, freeze_then_kill)
    finally:
        os.kill(pair.decoder.pid, signal.SIGCONT)
    assert state["frozen"] and stream.resumes == 1
    check_once_each(got, speech)


async def test_a_gateway_killed_between_utterances(pair: Pair, proxy: Proxy) -> None:
    speech = talk(3, pause_s=3.0)
    first = pair.ports[0]

    def kill_after_first_final(stream: Stream, msg: dict[str, Any]) -> None:
        if msg["type"] == "final" and msg["utterance"] == 0 and pair.gateways[first].popen.poll() is None:
            pair.kill(first)

    got, stream = await stream_through(proxy.url, speech, kill_after_first_final)
    assert stream.resumes == 1
    check_once_each(got, speech)


async def test_a_gateway_killed_during_the_replay_and_a_drain(
    pair: Pair, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dies; the client resumes on B, and B dies while it replays what the client missed; A
    comes back and the session goes on there. Then A is stopped gracefully (SIGTERM): it tells
    its client to reconnect, and the session goes on on B, restarted meanwhile."""
    speech = talk(4, pause_s=2.0)
    a, b = pair.ports
    original = Stream._resume_on
    state = {"killed_b": False, "drained": False}

    async def resume_on(self: Stream, ws: Any) -> dict[str, Any] | None:
        if self.resumes == 0 and not state["killed_b"]:
            # The first resume, on B: B dies as soon as it has sent the first replayed message.
            real_recv = ws.recv

            async def recv(*args: Any, **kwargs: Any) -> Any:
                raw = await real_recv(*args, **kwargs)
                if not state["killed_b"] and json.loads(raw)["type"] != "resumed":
                    state["killed_b"] = True
                    pair.kill(b)
                    pair.start_gateway(a)
                    await async_wait_for(lambda: pair.ready(a), 60, "A again")
                return raw

            ws.recv = recv
        return await original(self, ws)

    monkeypatch.setattr(Stream, "_resume_on", resume_on)

    async def scenario(stream: Stream, msg: dict[str, Any]) -> None:
        if (
            msg["type"] == "interim"
            and msg["utterance"] == 1
            and pair.gateways[a].popen.poll() is None
            and not state["killed_b"]
        ):
            pair.kill(a)
        if msg["type"] == "final" and msg["utterance"] == 2 and not state["drained"] and state["killed_b"]:
            state["drained"] = True
            pair.start_gateway(b)
            await async_wait_for(lambda: pair.ready(b), 60, "B again")
            pair.gateways[a].signal(signal.SIGTERM)

    got, stream = await stream_through(proxy.url, speech, scenario)
    assert state["killed_b"] and state["drained"] and stream.resumes == 2, stream.resumes
    check_once_each(got, speech)


async def test_resumes_that_must_not_be_are_refused(pair: Pair, proxy: Proxy, redis_url: str) -> None:
    url = "ws://127.0.0.1:%d/v1/listen" % pair.ports[1]

    async def resume(session: str, token: str) -> tuple[dict[str, Any], int | None]:
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"op": "resume", "session_id": session, "resume_token": token, "last_seq": 0}))
            while True:
                msg = json.loads(await ws.recv())
                if msg["type"] in ("resumed", "error"):
                    break
            if msg["type"] == "resumed":
                return msg, None  # and the connection drops: the session may be resumed again
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
        return msg, ws.close_code

    async with connect(proxy.url, sample_rate=16000) as stream:
        session, token = stream.session_id, stream.resume_token
        assert token and len(token) >= 24
        msg, code = await resume(session, "not-" + token)
        assert msg["code"] == "bad_token" and code == 4401
        # Still connected (its lease is fresh): a second resume is refused, the session is untouched.
        msg, code = await resume(session, token)
        assert msg["code"] == "session_in_use" and code == 4409
        msg, code = await resume("no-such-session", token)
        assert msg["code"] == "unknown_session" and code == 4404

    async def resume_when_free(session: str, token: str) -> dict[str, Any]:
        """As the client library does: a connection that just closed may still hold the session
        for a moment (its gateway is recording that it left); `session_in_use` is waited out."""
        for _ in range(30):
            msg, _code = await resume(session, token)
            if msg.get("code") != "session_in_use":
                return msg
            await asyncio.sleep(0.1)
        return msg

    # The client left (no stop): the session waits for a resume. Resuming it over and over, as a
    # way around the limits, is refused past RESUMES_PER_MINUTE.
    kinds = [await resume_when_free(session, token) for _ in range(7)]
    assert [m["type"] for m in kinds[:6]] == ["resumed"] * 6
    assert kinds[6]["code"] == "resume_flood", kinds[6]
    # An expired session: its state lives RESUME_TTL_S after the last word from its gateway.
    import redis

    r = redis.Redis.from_url(redis_url)
    r.delete("stt:session:%s" % session)
    msg, code = await resume(session, token)
    assert msg["code"] == "unknown_session"
    r.close()


async def test_a_client_without_resume_gets_the_old_behaviour(pair: Pair, proxy: Proxy) -> None:
    speech = talk(1)
    async with connect(proxy.url, sample_rate=16000, resume=False) as stream:

        async def kill_soon() -> None:
            await asyncio.sleep(1.0)
            pair.kill(pair.ports[0])

        killer = asyncio.create_task(kill_soon())
        with pytest.raises(ClientError):
            async for _ in stream.receive_while(stream.send_audio(speech.pcm16, speed=1.0)):
                pass
        await killer


async def test_stt_client_json_survives_a_gateway_sigkill(pair: Pair, proxy: Proxy, tmp_path: Any) -> None:
    import sys

    import soundfile as sf

    speech = talk(3)
    wav = tmp_path / "talk.wav"
    sf.write(wav, speech.audio, 16000, subtype="PCM_16")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stt",
        "client",
        str(wav),
        "--json",
        "--url",
        proxy.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(5.0)  # into the second sentence
    pair.kill(pair.ports[0])
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    msgs = [json.loads(line) for line in out.decode().splitlines()]
    assert msgs[0]["type"] == "started" and msgs[-1]["type"] == "done"
    check_once_each([m for m in msgs if m["type"] not in ("started", "done")], speech)
