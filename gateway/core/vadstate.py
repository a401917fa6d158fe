"""The WebRTC VAD's own state, saved and put back, so that a session resumed on another gateway
judges speech exactly as the gateway before it would have.

The VAD adapts as it hears (noise and speech models, minimum-energy trackers, hangover
counters), and a fresh one judges the same audio differently for seconds: measured on a
recorded talk, a fresh VAD primed with 1 s of the audio before disagreed with the one that had
heard everything at 65% of the resume points, for up to 146 frames (4.4 s) after them; primed
with 5 s, still at 8%. The state is one flat C struct of integers (`VadInstT` of WebRTC's
vad_core.h: no pointers), so its bytes are the state: `save` copies them out, `load` copies
them into another instance.

That is only safe for the struct this build was checked to have: `exact()` copies a state
between two instances on a probe signal once per process and holds them to the same decisions
and the same bytes after; a library whose state does not pass, or a snapshot from another
build (its tag differs), is not loaded, and the caller primes a fresh VAD with audio instead.
"""

from __future__ import annotations

import base64
import ctypes
import functools
import importlib.metadata
import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

RATE = 16000
FRAME_BYTES = 960  # 30 ms at 16 kHz
STATE_BYTES = 736  # sizeof(VadInstT) on the 64-bit builds of WebRTC's VAD that webrtcvad wraps


def _pointer(vad: Any) -> int:
    """The address of the VadInstT inside a `webrtcvad.Vad`."""
    capsule = vad._vad
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(capsule, get_name(capsule))
    if not address:
        raise ValueError("the VAD has no state")
    return int(address)


@functools.cache
def tag() -> str:
    """Which build a snapshot comes from: only the same one loads it."""
    try:
        version = importlib.metadata.version("webrtcvad-wheels")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return "webrtcvad-%s-%d" % (version, STATE_BYTES)


def _probe() -> list[bytes]:
    """Two seconds of a voice-like signal in noise, then noise: frames that move every part of
    the VAD's state."""
    rng = np.random.default_rng(7)
    t = np.arange(2 * RATE) / RATE
    voice = 3000 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    noise = rng.normal(0, 200, 4 * RATE)
    audio = noise.copy()
    audio[: len(voice)] += voice
    pcm = np.clip(audio, -32768, 32767).astype("<i2").tobytes()
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]


@functools.cache
def exact() -> bool:
    """Whether this build's state can be saved and loaded (checked once per process)."""
    import webrtcvad

    try:
        frames = _probe()
        a, b = webrtcvad.Vad(2), webrtcvad.Vad(2)
        for f in frames[:70]:
            a.is_speech(f, RATE)
        _copy_in(b, ctypes.string_at(_pointer(a), STATE_BYTES))
        same = all(a.is_speech(f, RATE) == b.is_speech(f, RATE) for f in frames[70:])
        same = same and ctypes.string_at(_pointer(a), STATE_BYTES) == ctypes.string_at(_pointer(b), STATE_BYTES)
    except (AttributeError, ValueError, OSError) as exc:
        logger.warning("the VAD's state cannot be read (%s): a resumed session primes a fresh VAD instead", exc)
        return False
    if not same:
        logger.warning("the VAD's state does not copy exactly: a resumed session primes a fresh VAD instead")
    return same


def _copy_in(vad: Any, state: bytes) -> None:
    ctypes.memmove(_pointer(vad), state, STATE_BYTES)


def save(vad: Any) -> str:
    """The VAD's state as text ("" when this build's cannot be saved)."""
    if not exact():
        return ""
    return "%s:%s" % (tag(), base64.b64encode(ctypes.string_at(_pointer(vad), STATE_BYTES)).decode())


def load(vad: Any, saved: str) -> bool:
    """Put a saved state into `vad`; False (and `vad` untouched) when it cannot be."""
    name, _, data = saved.rpartition(":")
    if not saved or name != tag() or not exact():
        return False
    state = base64.b64decode(data)
    if len(state) != STATE_BYTES:
        return False
    _copy_in(vad, state)
    return True
