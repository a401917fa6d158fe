"""Audio for the client: WAV/FLAC files of any rate and channel count, or raw PCM on stdin."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from common.audio import MODEL_RATE, float32_to_pcm16
from common.errors import AudioError


def read_file(path: str | Path) -> bytes:
    """The file as 16 kHz mono PCM16 (channels averaged, resampled with soxr)."""
    import soundfile as sf
    import soxr

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError("cannot read %s: %s" % (path, exc)) from exc
    mono = audio.mean(axis=1)
    if rate != MODEL_RATE:
        mono = soxr.resample(mono, rate, MODEL_RATE, quality="HQ")
    return float32_to_pcm16(np.asarray(mono, dtype=np.float32))


def read_stdin(chunk_bytes: int) -> Iterator[bytes]:
    """Raw little-endian 16-bit mono PCM from stdin, in chunks of whole samples, as it comes."""
    carry = b""
    stream = sys.stdin.buffer
    while True:
        data = stream.read1(chunk_bytes) if hasattr(stream, "read1") else stream.read(chunk_bytes)
        if not data:
            break
        data = carry + data
        cut = len(data) - len(data) % 2
        carry = data[cut:]
        if cut:
            yield data[:cut]
