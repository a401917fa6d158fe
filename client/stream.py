"""The async Python client: connect, stream audio, iterate interims and finals, finalize, stop.

    async with connect("ws://localhost:8000/v1/listen", sample_rate=16000) as stream:
        # send_audio paces the audio, then sends `stop`; messages come until `done`.
        async for msg in stream.receive_while(stream.send_audio(pcm, speed=1.0)):
            print(msg["type"], msg.get("text"))

Messages are the protocol's JSON objects as dicts (see README "Client protocol").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from common.errors import SttError


class ClientError(SttError):
    """The service could not be reached, or the session ended abnormally."""

    def __init__(self, message: str, code: str = "", close_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code


@dataclass
class Stream:
    ws: Any
    sample_rate: int
    session_id: str = ""
    done: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)  # everything received, in order
    _stopped: bool = False

    async def send(self, pcm: bytes) -> None:
        """One chunk of little-endian 16-bit mono PCM at the session's rate."""
        await self.ws.send(pcm)

    async def send_audio(self, pcm: bytes, speed: float = 1.0, chunk_ms: int = 100, stop: bool = True) -> None:
        """Send `pcm` in chunks paced at `speed` x real time (0: as fast as possible), then `stop`."""
        step = max(2, self.sample_rate * 2 * chunk_ms // 1000 // 2 * 2)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(pcm), step):
                yield pcm[i : i + step]

        await self.send_chunks(chunks(), speed, stop)

    async def send_chunks(self, chunks: AsyncIterable[bytes], speed: float = 1.0, stop: bool = True) -> None:
        """Send PCM chunks paced at `speed` x real time (0: as they come), then `stop`. Like a
        microphone, each chunk goes out once its last sample has been "recorded"."""
        loop = asyncio.get_running_loop()
        t0, sent = loop.time(), 0
        async for chunk in chunks:
            sent += len(chunk)
            if speed > 0:
                await asyncio.sleep(max(0.0, t0 + sent / 2 / self.sample_rate / speed - loop.time()))
            await self.send(chunk)
        if stop:
            await self.stop()

    async def receive_while(self, sending: Coroutine[Any, Any, None]) -> AsyncIterator[dict[str, Any]]:
        """Run `sending` (e.g. `send_audio(...)`) beside the session and yield its messages until
        `done`; if the session ends first (a fatal error, a closed connection), the sender is
        cancelled and the session's error is what is raised."""
        sender = asyncio.create_task(sending)
        try:
            async for msg in self:
                yield msg
        finally:
            if not sender.done():
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def finalize(self) -> None:
        """End the current utterance now (its final follows)."""
        await self.ws.send(json.dumps({"op": "finalize"}))

    async def keepalive(self) -> None:
        await self.ws.send(json.dumps({"op": "keepalive"}))

    async def stop(self) -> None:
        """No more audio: the remaining finals come, then `done`."""
        if not self._stopped:
            self._stopped = True
            await self.ws.send(json.dumps({"op": "stop"}))

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        """Interim, final and error messages until `done`. A fatal error ends the session with a
        close code other than 1000: that raises ClientError after its `error` was yielded."""
        while not self.done:
            try:
                raw = await self.ws.recv()
            except ConnectionClosed as exc:
                raise _closed_error(exc, self.messages) from None
            msg = json.loads(raw)
            self.messages.append(msg)
            if msg["type"] == "done":
                self.done = True
                return
            yield msg


def _closed_error(exc: ConnectionClosed, messages: list[dict[str, Any]]) -> ClientError:
    code = exc.rcvd.code if exc.rcvd is not None else None
    last_error = next((m for m in reversed(messages) if m.get("type") == "error"), None)
    why = "%s: %s" % (last_error["code"], last_error["message"]) if last_error else "no reason given"
    return ClientError(
        "session closed before done (close code %s; %s)" % (code, why),
        code=last_error["code"] if last_error else "",
        close_code=code,
    )


@asynccontextmanager
async def connect(
    url: str,
    *,
    sample_rate: int = 16000,
    lang: str = "en",
    interim: bool = True,
    word_timestamps: bool = False,
    task: str = "transcribe",
    prompt: str = "",
    api_key: str = "",
    open_timeout: float = 10.0,
) -> AsyncIterator[Stream]:
    """Open a session: connects, sends `start`, waits for `started`."""
    headers = {"Authorization": "Bearer %s" % api_key} if api_key else None
    try:
        ws = await websockets.connect(url, max_size=2**23, open_timeout=open_timeout, additional_headers=headers)
    except (TimeoutError, OSError, InvalidHandshake, InvalidURI) as exc:
        raise ClientError("cannot connect to %s: %s" % (url, exc or type(exc).__name__)) from exc
    try:
        start = {
            "op": "start",
            "sample_rate": sample_rate,
            "lang": lang,
            "interim": interim,
            "word_timestamps": word_timestamps,
            "task": task,
        }
        if prompt:
            start["prompt"] = prompt
        await ws.send(json.dumps(start))
        stream = Stream(ws, sample_rate)
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), open_timeout))
        except ConnectionClosed as exc:
            raise _closed_error(exc, stream.messages) from None
        stream.messages.append(first)
        if first["type"] == "error":
            raise ClientError("%s: %s" % (first["code"], first["message"]), code=first["code"])
        stream.session_id = first.get("session_id", "")
        yield stream
    finally:
        await ws.close()
