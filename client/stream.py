"""The async Python client: connect, stream audio, iterate interims and finals, finalize, stop.

    async with connect("ws://localhost:8000/v1/listen", sample_rate=16000) as stream:
        # send_audio paces the audio, then sends `stop`; messages come until `done`.
        async for msg in stream.receive_while(stream.send_audio(pcm, speed=1.0)):
            print(msg["type"], msg.get("text"))

Messages are the protocol's JSON objects as dicts (docs/clients/native.md).

A session survives its connection (`resume=True`, the default): when the connection breaks (a
gateway dies, is deployed, a network blip) the stream reconnects with backoff, to the same URL
(a load balancer sends it to a live gateway), resumes the session, sends again the audio the
gateway does not hold (from the last `buffer_s` seconds it keeps of what it sent) and carries
on. The caller sees one stream of messages, each once (the gateway replays what was missed with
the original `seq`; a message seen already is skipped).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from common.backoff import Backoff
from common.errors import SttError
from common.protocol import RESUMABLE_CLOSES, RESUME_TTL_S, RETRY_RESUME

# The close codes to resume after, the refusals to wait out, how long a session outlives its
# connection (RESUME_TTL_S's default): what the gateway closes with and keeps.
RESUME_FOR_S = RESUME_TTL_S


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
    url: str = ""
    headers: dict[str, str] | None = None
    open_timeout: float = 10.0
    resume: bool = True
    buffer_s: float = 30.0
    resume_token: str = ""
    last_seq: int = -1
    resumes: int = 0  # how many times the session was resumed
    _stopped: bool = False
    _sent: collections.deque[tuple[int, bytes]] = field(default_factory=collections.deque)  # (offset, pcm)
    _sent_bytes: int = 0
    _resent_to: int = 0  # bytes of audio sent again on the newest connection
    _up: asyncio.Event = field(default_factory=asyncio.Event)
    _queued: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)

    def __post_init__(self) -> None:
        self._up.set()

    async def send(self, pcm: bytes) -> None:
        """One chunk of little-endian 16-bit mono PCM at the session's rate."""
        offset = self._sent_bytes
        self._sent_bytes += len(pcm)
        if self.resume:
            self._sent.append((offset, pcm))
            keep = int(self.buffer_s * self.sample_rate * 2)
            while self._sent and self._sent[0][0] + len(self._sent[0][1]) < self._sent_bytes - keep:
                self._sent.popleft()
        await self._up.wait()
        if offset + len(pcm) <= self._resent_to:
            return  # sent again after a resume already
        with contextlib.suppress(ConnectionClosed):
            # A broken connection: the receiver resumes, and this chunk is sent again then.
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

    async def _op(self, op: dict[str, Any]) -> None:
        await self._up.wait()
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(op))

    async def finalize(self) -> None:
        """End the current utterance now (its final follows)."""
        await self._op({"op": "finalize"})

    async def keepalive(self) -> None:
        await self._op({"op": "keepalive"})

    async def stop(self) -> None:
        """No more audio: the remaining finals come, then `done`."""
        if not self._stopped:
            self._stopped = True
            await self._op({"op": "stop"})

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        """Interim, final and error messages until `done`. A fatal error ends the session with a
        close code other than 1000: that raises ClientError after its `error` was yielded."""
        while not self.done:
            seen = False
            if self._queued:
                msg, seen = self._queued.popleft(), True
            else:
                try:
                    msg = json.loads(await self.ws.recv())
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                    if not (self.resume and self.resume_token and code in RESUMABLE_CLOSES):
                        raise _closed_error(exc, self.messages) from None
                    await self._resume()
                    continue
            if not self._take(msg, seen):
                continue
            if msg["type"] == "done":
                self.done = True
                return
            yield msg

    def _take(self, msg: dict[str, Any], seen: bool = False) -> bool:
        """Whether `msg` is news for the caller: not seen before, not the protocol's own.
        `seen`: its seq was checked already (queued while resuming)."""
        seq = msg.get("seq")
        if isinstance(seq, int) and not seen:
            if seq <= self.last_seq:
                return False  # replayed, and seen before the break
            self.last_seq = seq
        if msg["type"] in ("resumed", "reconnect"):
            return False
        self.messages.append(msg)
        return True

    async def _resume(self) -> None:
        """Reconnect with backoff and resume the session; its missed messages are queued, the
        audio the gateway does not hold is sent again. ClientError when it cannot be."""
        self._up.clear()
        backoff, deadline = Backoff(first=0.1, cap=2.0), time.monotonic() + RESUME_FOR_S
        while True:
            try:
                ws = await websockets.connect(
                    self.url, max_size=2**23, open_timeout=self.open_timeout, additional_headers=self.headers
                )
            except (TimeoutError, OSError, InvalidHandshake) as exc:
                if time.monotonic() > deadline:
                    raise ClientError("cannot reconnect to %s: %s" % (self.url, exc)) from exc
                await asyncio.sleep(backoff.next())
                continue
            resumed = await self._resume_on(ws)
            if resumed is not None:
                break
            if time.monotonic() > deadline:
                raise ClientError("the session could not be resumed in %.0f s" % RESUME_FOR_S, "session_in_use")
            await asyncio.sleep(backoff.next())
        self.ws, self.resumes = ws, self.resumes + 1
        if resumed.get("ended"):
            self._up.set()  # the session had ended: what was missed of it is queued, `done` last
            return
        # Audio from where the gateway's hold ends, as fast as it takes it (a burst).
        start = resumed["audio_received_ms"] * self.sample_rate // 1000 * 2
        self._resent_to = self._sent_bytes
        with contextlib.suppress(ConnectionClosed):
            for offset, pcm in list(self._sent):
                if offset + len(pcm) > start:
                    await ws.send(pcm[max(0, start - offset) :])
            if self._stopped:
                await ws.send(json.dumps({"op": "stop"}))
        self._up.set()

    async def _resume_on(self, ws: Any) -> dict[str, Any] | None:
        """Send `resume` on a new connection: its `resumed` message, None to try again later
        (ClientError when the session cannot be resumed at all). Replayed messages are queued."""
        try:
            await ws.send(
                json.dumps(
                    {
                        "op": "resume",
                        "session_id": self.session_id,
                        "resume_token": self.resume_token,
                        "last_seq": self.last_seq,
                    }
                )
            )
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), self.open_timeout))
                if msg["type"] == "resumed":
                    self.last_seq = max(self.last_seq, msg.get("seq", self.last_seq))
                    return dict(msg)
                if msg["type"] == "error" and "utterance" not in msg:
                    await ws.close()
                    if msg["code"] in RETRY_RESUME:
                        return None
                    raise ClientError("%s: %s" % (msg["code"], msg["message"]), code=msg["code"])
                if msg.get("seq", -1) > self.last_seq:
                    # Counted as seen now: they are yielded after `resumed`, which has a higher seq.
                    self.last_seq = msg["seq"]
                    self._queued.append(msg)
                if msg["type"] == "done":
                    return {"audio_received_ms": 0, "ended": True}
        except ConnectionClosed:
            return None
        except TimeoutError:
            await ws.close()
            return None


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
    resume: bool = True,
    buffer_s: float = 30.0,
    eager_eot_ms: int = 0,
    end_of_turn: str = "silence",
    diarize: bool = False,
    max_speakers: int = 8,
) -> AsyncIterator[Stream]:
    """Open a session: connects, sends `start`, waits for `started`. `resume`: a broken
    connection is reconnected and the session resumed (keeping the last `buffer_s` seconds of
    audio sent, for the gateway to have again what it lost). `eager_eot_ms`: eager end of turn,
    the silence that ends an utterance whose text so far ends a sentence (0: the service's).
    `end_of_turn`: "model" has the service's end-of-turn model end utterances ("silence": its
    silence rules alone).
    `diarize`: each final says who spoke (`speaker`, from 0; at most `max_speakers`)."""
    headers = {"Authorization": "Bearer %s" % api_key} if api_key else None
    try:
        ws = await websockets.connect(url, max_size=2**23, open_timeout=open_timeout, additional_headers=headers)
    except (TimeoutError, OSError, InvalidHandshake, InvalidURI) as exc:
        raise ClientError("cannot connect to %s: %s" % (url, exc or type(exc).__name__)) from exc
    stream = Stream(ws, sample_rate, url=url, headers=headers, open_timeout=open_timeout, resume=resume)
    stream.buffer_s = buffer_s
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
        if diarize:
            start.update(diarize=True, max_speakers=max_speakers)
        if eager_eot_ms:
            start["eager_eot_ms"] = eager_eot_ms
        if end_of_turn != "silence":
            start["end_of_turn"] = end_of_turn
        await ws.send(json.dumps(start))
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), open_timeout))
        except ConnectionClosed as exc:
            raise _closed_error(exc, stream.messages) from None
        stream._take(first)
        if first["type"] == "error":
            raise ClientError("%s: %s" % (first["code"], first["message"]), code=first["code"])
        stream.session_id = first.get("session_id", "")
        stream.resume_token = first.get("resume_token", "")
        yield stream
    finally:
        await stream.ws.close()
