"""An uploaded file as a stream of parts to decode, in bounded memory whatever its length.

PyAV (FFmpeg) decodes the file frame by frame and resamples it to 16 kHz mono PCM16; the
gateway's own endpointer (WebRTC VAD) finds the spans of speech in it as it goes; spans are
joined into parts of at most FILE_PART_S (pauses inside a part stay: the model hears sentences
in their context, as in a whole-file decode), and each part is handed on as soon as no later
speech can join it. Only the audio since the open part began (at most a part, plus a few
seconds) is ever held.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from common.errors import SttError
from common.settings import GatewaySettings
from gateway.core.endpoint import Endpointer
from gateway.core.frames import Began, Ended, Event

RATE = 16000
BYTES_PER_S = RATE * 2
SPAN_PAD_S = 0.2  # audio kept after a span's end of speech
LOOKBACK_S = 3.0  # audio kept before the present while no part is open (pre-roll, candidate frames)
CHUNK_BYTES = BYTES_PER_S  # the decoded stream is fed on a second at a time, as a session's would be


class BadFile(SttError):
    """An upload that cannot be transcribed: `code` says why (invalid_file, empty_file, too_long)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Part:
    start: int  # byte offsets of the file's 16 kHz PCM16
    end: int
    pcm: bytes


def decoded(fileobj: BinaryIO, max_s: float = 0.0) -> Iterator[bytes]:
    """The file as 16 kHz mono PCM16, a chunk at a time: any container and codec PyAV reads,
    any rate and channels. More than `max_s` seconds (0: no limit) is BadFile("too_long")."""
    import av

    limit = int(max_s * BYTES_PER_S) if max_s else 0
    total = 0
    try:
        with av.open(fileobj, mode="r", metadata_errors="ignore") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise BadFile("invalid_file", "the file holds no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            frames = (f for packet in container.demux(stream) for f in packet.decode())
            for frame in itertools.chain(frames, [None]):  # None: the resampler's last samples
                assert frame is None or isinstance(frame, av.AudioFrame)
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().tobytes()
                    total += len(chunk)
                    if limit and total > limit:
                        raise BadFile(
                            "too_long",
                            "the file is longer than %.0f s of audio (MAX_FILE_S)" % max_s,
                        )
                    yield chunk
    except BadFile:
        raise
    except Exception as exc:  # FFmpeg's errors for unknown, corrupt or truncated input
        raise BadFile("invalid_file", "the file could not be read as audio (%s)" % type(exc).__name__) from None


class Splitter:
    """Fed the file's PCM in order, it returns each part once it is complete."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.endpointer = Endpointer(
            settings.VAD_MODE,
            settings.PRE_ROLL_MS,
            settings.MIN_SPEECH_MS,
            settings.FINAL_SILENCE_MS_MIN,
            settings.FINAL_SILENCE_MS_MAX,
            settings.MAX_UTTERANCE_S,
        )
        self.join = int(min(settings.FILE_PART_S, settings.MAX_UTTERANCE_S) * BYTES_PER_S)
        self.limit = int(settings.MAX_UTTERANCE_S * BYTES_PER_S)
        self.buf = bytearray()
        self.buf_start = 0  # file offset of buf[0]
        self.pos = 0  # bytes fed
        self.part: list[int] | None = None  # [start, end) of the part being joined
        self.span_start: int | None = None  # a span of speech begun and not yet ended

    def feed(self, pcm: bytes) -> list[Part]:
        out: list[Part] = []
        for i in range(0, len(pcm), CHUNK_BYTES):
            chunk = pcm[i : i + CHUNK_BYTES]
            self.pos += len(chunk)
            self.buf += chunk
            self._events(self.endpointer.feed(chunk), out)
            if self.part is not None and self._past_join(self.part[0]):
                out.append(self._take())
            self._trim()
        return out

    def finish(self) -> list[Part]:
        out: list[Part] = []
        self._events(self.endpointer.force_end(), out)
        if self.part is not None:
            out.append(self._take())
        return out

    def _past_join(self, start: int) -> bool:
        """Whether no span of speech, begun or to come, can end within `join` of `start`: a span
        in progress ends after its last voiced frame (and its pad), a later one after now."""
        if self.span_start is not None:
            return (self.endpointer.last_voiced + int(SPAN_PAD_S * RATE)) * 2 - start > self.join
        return self.pos - start > self.join

    def _events(self, events: list[Event], out: list[Part]) -> None:
        for ev in events:
            if isinstance(ev, Began):
                self.span_start = ev.sample * 2
            elif isinstance(ev, Ended) and self.span_start is not None:
                start, end = self.span_start, min(self.pos, (ev.sample + int(SPAN_PAD_S * RATE)) * 2)
                self.span_start = None
                if self.part is not None and end - self.part[0] <= self.join:
                    self.part[1] = end
                    continue
                if self.part is not None:
                    out.append(self._take())
                self.part = [start, min(end, start + self.limit)]

    def _take(self) -> Part:
        assert self.part is not None
        start, end = self.part
        self.part = None
        pcm = bytes(self.buf[max(0, start - self.buf_start) : max(0, end - self.buf_start)])
        return Part(start, end, pcm)

    def _trim(self) -> None:
        keep = self.pos - int(LOOKBACK_S * BYTES_PER_S)
        for held in (self.part[0] if self.part else None, self.span_start):
            if held is not None:
                keep = min(keep, held)
        drop = keep - self.buf_start
        if drop > 0:
            del self.buf[:drop]
            self.buf_start = keep


class FileReader:
    """A file being decoded and cut, a step at a time (each step blocks: run it in a thread)."""

    STEP_BYTES = 30 * BYTES_PER_S  # at most this much audio decoded per step

    def __init__(self, fileobj: BinaryIO, settings: GatewaySettings) -> None:
        self.chunks = decoded(fileobj, settings.MAX_FILE_S)
        self.splitter = Splitter(settings)
        self.finished = False
        self.bytes = 0  # of 16 kHz PCM16 decoded so far

    def step(self) -> list[Part]:
        """Decode on until a part is complete, STEP_BYTES are decoded, or the file ends."""
        out: list[Part] = []
        fed = 0
        while not out and fed < self.STEP_BYTES and not self.finished:
            chunk = next(self.chunks, None)
            if chunk is None:
                self.finished = True
                out += self.splitter.finish()
                break
            fed += len(chunk)
            self.bytes += len(chunk)
            out += self.splitter.feed(chunk)
        return out


def speech_parts(pcm: bytes, settings: GatewaySettings) -> list[tuple[int, int]]:
    """(start, end) byte offsets of the parts of a whole recording held in memory."""
    splitter = Splitter(settings)
    parts = splitter.feed(pcm) + splitter.finish()
    return [(p.start, p.end) for p in parts]
