"""G.711 (μ-law and A-law, 8 bits a sample) to and from PCM16, by table in numpy: what telephony
streams send (OpenAI's `audio/pcmu` and `audio/pcma`, Deepgram's `mulaw` and `alaw`). Python
3.13 has no `audioop`."""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype("<i2")


@functools.cache
def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype("<i2")


def _table(law: str) -> np.ndarray:
    if law == "ulaw":
        return _ulaw_table()
    if law == "alaw":
        return _alaw_table()
    raise ValueError("unknown G.711 law %r" % law)


def decode(data: bytes, law: str) -> bytes:
    """G.711 bytes (`law`: "ulaw" or "alaw") as little-endian PCM16."""
    pcm: bytes = _table(law)[np.frombuffer(data, dtype=np.uint8)].tobytes()
    return pcm


def encode(pcm: bytes, law: str) -> bytes:
    """PCM16 as G.711: each sample to the code whose level is nearest (for tests and clients)."""
    table = _table(law).astype(np.int32)
    order = np.argsort(table)
    levels = table[order]
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    idx = np.clip(np.searchsorted(levels, samples), 1, len(levels) - 1)
    nearer_below = (samples - levels[idx - 1]) <= (levels[idx] - samples)
    codes = order[np.where(nearer_below, idx - 1, idx)]
    out: bytes = codes.astype(np.uint8).tobytes()
    return out
