"""The header of a WAV stream (Deepgram's clients may send one instead of saying the encoding)."""

from __future__ import annotations

import struct

from gateway.core.options import BadInput

MAX_HEADER_BYTES = 64 * 1024  # a WAV stream's header is read up to this before it is refused


def wav_header(header: bytes | bytearray) -> tuple[tuple[int, int, int, int], int] | None:
    """((format tag, channels, rate, bits), where the audio starts) once `header` holds the whole
    header; None while more is needed. BadInput: not WAV, or no audio within MAX_HEADER_BYTES."""
    if len(header) < 12:
        return None
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise BadInput(
            "unsupported_encoding",
            "the stream is not WAV: send raw audio with encoding=linear16|mulaw|alaw and sample_rate",
            fatal=True,
        )
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(header):
        chunk, size = header[pos : pos + 4], struct.unpack("<I", header[pos + 4 : pos + 8])[0]
        if chunk == b"fmt " and pos + 8 + 16 <= len(header):
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", header[pos + 8 : pos + 24])
            fmt = (tag, channels, rate, bits)
        if chunk == b"data":
            if fmt is None:
                break
            return fmt, pos + 8
        pos += 8 + size + (size & 1)
    if len(header) > MAX_HEADER_BYTES:
        raise BadInput("unsupported_encoding", "no WAV audio data within %d bytes" % MAX_HEADER_BYTES, fatal=True)
    return None
