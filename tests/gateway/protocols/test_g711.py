"""G.711 tables against Python's own `audioop` (still in 3.11), and the round trip."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gateway.protocols import g711


@pytest.mark.parametrize(("law", "name"), [("ulaw", "ulaw2lin"), ("alaw", "alaw2lin")])
def test_decoding_matches_audioop(law: str, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    every = bytes(range(256))
    assert g711.decode(every, law) == getattr(audioop, name)(every, 2)


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_encoding_then_decoding_is_within_a_quantization_step(law: str) -> None:
    samples = np.linspace(-32768, 32767, 5001).astype("<i2")
    back = np.frombuffer(g711.decode(g711.encode(samples.tobytes(), law), law), "<i2").astype(np.int32)
    error = np.abs(back - samples.astype(np.int32))
    # G.711 steps grow with the level: at most 1/32 of it (and 16 near zero).
    assert np.all(error <= np.maximum(16, np.abs(samples.astype(np.int32)) // 16)), error.max()
    codes = bytes(range(256))
    assert g711.decode(g711.encode(g711.decode(codes, law), law), law) == g711.decode(codes, law)


def test_an_unknown_law_is_refused() -> None:
    with pytest.raises(ValueError):
        g711.decode(b"\x00", "opus")
