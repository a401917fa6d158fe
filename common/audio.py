"""Audio helpers: PCM16 <-> float32 and streaming resampling to 16 kHz."""

from __future__ import annotations

import numpy as np

MODEL_RATE = 16000


def pcm16_to_float32(data: bytes | bytearray | memoryview) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float32_to_pcm16(audio: np.ndarray) -> bytes:
    clipped = np.clip(audio, -1.0, 32767 / 32768)
    pcm: bytes = (clipped * 32768.0).astype("<i2").tobytes()
    return pcm


class StreamResampler:
    """Streaming PCM16 resampler (soxr): chunks in, chunks out, no seams between them."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        import soxr

        self.in_rate, self.out_rate = in_rate, out_rate
        self._rs = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        samples = np.frombuffer(pcm, dtype="<i2")
        out = self._rs.resample_chunk(samples, last=last)
        return np.ascontiguousarray(out, dtype="<i2").tobytes()
