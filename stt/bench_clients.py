"""`stt bench`'s real-time clients, one per wire protocol the gateway speaks: the native one
(through the client library), OpenAI Realtime transcription and Deepgram live (over a plain
WebSocket, as those vendors' SDKs would speak). Each records, with its arrival time, every final
and every interim as the native protocol's fields (`utterance`, `text`, `start`, `end`), so one
analysis serves all three."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets

from client.stream import ClientError, connect
from stt.speech import Speech

PROTOCOLS = ("native", "openai", "deepgram")
CHUNK_S = 0.1
DRAIN_S = 30.0  # how long a client waits for the finals still owed after its audio


@dataclass
class ClientRun:
    t0: float = 0.0  # wall (loop) time of audio time 0
    finals: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    interims: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    error: str = ""


async def run_client(
    protocol: str,
    url: str,
    speech: Speech,
    speed: float,
    delay: float,
    rate: int = 16000,
    words: bool = False,
    eager_ms: int = 0,
    end_of_turn: str = "silence",
) -> ClientRun:
    """One client's session; `rate`: the sample rate it sends (OpenAI's is always 24 kHz);
    `words`: native finals with word times (Deepgram's always have them); `eager_ms`: the
    native protocol's eager end of turn; `end_of_turn`: its end-of-turn rule ("model", "silence")."""
    run = ClientRun()
    await asyncio.sleep(delay)
    try:
        if protocol == "openai":
            await _openai(url, speech, speed, run)
        elif protocol == "deepgram":
            await _deepgram(url, speech, speed, run, rate)
        else:
            await _native(url, speech, speed, run, rate, words, eager_ms, end_of_turn)
    except (ClientError, OSError, websockets.WebSocketException, TimeoutError) as exc:
        run.error = str(exc) or type(exc).__name__
    return run


async def _native(
    url: str,
    speech: Speech,
    speed: float,
    run: ClientRun,
    rate: int,
    words: bool,
    eager_ms: int = 0,
    end_of_turn: str = "silence",
) -> None:
    loop = asyncio.get_running_loop()
    async with connect(
        url, sample_rate=rate, lang="en", word_timestamps=words, eager_eot_ms=eager_ms, end_of_turn=end_of_turn
    ) as stream:
        run.t0 = loop.time()
        async for msg in stream.receive_while(stream.send_audio(speech.pcm16_at(rate), speed=speed)):
            now = loop.time()
            if msg["type"] == "final":
                run.finals.append((now, msg))
            elif msg["type"] == "interim":
                run.interims.append((now, msg))
            elif msg["type"] == "error":
                run.error = "%s: %s" % (msg["code"], msg["message"])


def with_path(url: str, path: str, query: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


async def _paced(send: Any, pcm: bytes, rate: int, speed: float, t0: float) -> None:
    """`send(chunk)` for each 100 ms of `pcm`, each once its last sample was "recorded"."""
    loop = asyncio.get_running_loop()
    step = int(rate * CHUNK_S) * 2
    for i in range(0, len(pcm), step):
        chunk = pcm[i : i + step]
        await asyncio.sleep(max(0.0, t0 + (i + len(chunk)) / 2 / rate / speed - loop.time()))
        await send(chunk)


async def _openai(url: str, speech: Speech, speed: float, run: ClientRun) -> None:
    loop = asyncio.get_running_loop()
    rate = 24000
    async with websockets.connect(with_path(url, "/v1/realtime", "intent=transcription"), max_size=2**23) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {
                            "input": {
                                "format": {"type": "audio/pcm", "rate": rate},
                                "transcription": {"model": "whisper-1", "language": "en"},
                            }
                        },
                    },
                }
            )
        )
        turns: dict[str, dict[str, Any]] = {}  # item -> its turn (utterance number, times)
        committed, done = [0], [0]

        async def read() -> None:
            async for raw in ws:
                now, ev = loop.time(), json.loads(raw)
                kind = ev["type"]
                if kind == "input_audio_buffer.speech_started":
                    turns[ev["item_id"]] = {"utterance": len(turns), "start": ev["audio_start_ms"] / 1000, "said": ""}
                elif kind == "input_audio_buffer.speech_stopped":
                    turns.setdefault(ev["item_id"], {"utterance": len(turns), "start": 0.0, "said": ""})
                    turns[ev["item_id"]]["end"] = ev["audio_end_ms"] / 1000
                elif kind == "input_audio_buffer.committed":
                    committed[0] += 1
                elif kind.endswith("input_audio_transcription.delta") and ev["item_id"] in turns:
                    turn = turns[ev["item_id"]]
                    turn["said"] += ev["delta"]
                    run.interims.append((now, {"utterance": turn["utterance"], "text": turn["said"]}))
                elif kind.endswith("input_audio_transcription.completed"):
                    done[0] += 1
                    turn = turns.get(ev["item_id"], {"utterance": -1, "start": 0.0})
                    end = turn.get("end", turn["start"])
                    run.finals.append(
                        (
                            now,
                            {
                                "utterance": turn["utterance"],
                                "text": ev["transcript"],
                                "start": turn["start"],
                                "end": end,
                            },
                        )
                    )
                elif kind == "error":
                    run.error = "%s: %s" % (ev["error"]["code"], ev["error"]["message"])

        reader = asyncio.create_task(read())
        try:
            run.t0 = loop.time()

            async def append(chunk: bytes) -> None:
                await ws.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})
                )

            await _paced(append, speech.pcm16_at(rate), rate, speed, run.t0)
            deadline = time.monotonic() + DRAIN_S
            while time.monotonic() < deadline and not reader.done():
                if committed[0] and done[0] >= committed[0] and committed[0] >= len(turns):
                    break
                await asyncio.sleep(0.05)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await reader


async def _deepgram(url: str, speech: Speech, speed: float, run: ClientRun, rate: int) -> None:
    loop = asyncio.get_running_loop()
    query = "model=bench&encoding=linear16&sample_rate=%d&interim_results=true" % rate
    async with websockets.connect(with_path(url, "/v1/listen", query), max_size=2**23) as ws:
        finals = [0]

        async def read() -> None:
            async for raw in ws:
                now, msg = loop.time(), json.loads(raw)
                if msg["type"] == "Results":
                    text = msg["channel"]["alternatives"][0]["transcript"]
                    fields = {"utterance": finals[0], "text": text, "start": msg["start"]}
                    fields["end"] = msg["start"] + msg["duration"]
                    if msg["is_final"]:
                        finals[0] += 1
                        run.finals.append((now, fields))
                    elif text:
                        run.interims.append((now, fields))
                elif msg["type"] == "Error":
                    run.error = "%s: %s" % (msg.get("variant"), msg.get("description"))

        reader = asyncio.create_task(read())
        run.t0 = loop.time()
        await _paced(ws.send, speech.pcm16_at(rate), rate, speed, run.t0)
        await ws.send(json.dumps({"type": "CloseStream"}))
        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.wait_for(reader, DRAIN_S)
