"""Sounds that are not speech but trip a voice detector: noise bursts of several colours, clicks,
mains hum, breath, tones and music-like notes; and speech with such noise before and after. Made
with numpy, deterministic for a seed (for the non-speech benchmark and tests: a final must not
invent words for them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.audio import MODEL_RATE
from stt.speech import Speech

LEAD_S, TAIL_S = 0.5, 1.5


@dataclass
class Sound:
    name: str
    kind: str
    audio: np.ndarray  # 16 kHz float32, silence before and after
    text: str = ""  # the words in it (mixed cases), empty for non-speech


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * MODEL_RATE)) / MODEL_RATE


def _envelope(n: int, attack_s: float = 0.02, release_s: float = 0.05) -> np.ndarray:
    env = np.ones(n)
    a, r = min(n // 2, int(attack_s * MODEL_RATE)), min(n // 2, int(release_s * MODEL_RATE))
    if a:
        env[:a] = np.linspace(0, 1, a)
    if r:
        env[-r:] = np.linspace(1, 0, r)
    return env


def _coloured(rng: np.random.Generator, seconds: float, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown), unit peak."""
    n = int(seconds * MODEL_RATE)
    spectrum = np.fft.rfft(rng.normal(size=n))
    f = np.fft.rfftfreq(n, 1 / MODEL_RATE)
    f[0] = f[1]
    x = np.fft.irfft(spectrum / f ** (exponent / 2), n)
    return np.asarray(x / (np.max(np.abs(x)) + 1e-9))


def _band(rng: np.random.Generator, seconds: float, lo: float, hi: float) -> np.ndarray:
    n = int(seconds * MODEL_RATE)
    spectrum = np.fft.rfft(rng.normal(size=n))
    f = np.fft.rfftfreq(n, 1 / MODEL_RATE)
    spectrum[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spectrum, n)
    return np.asarray(x / (np.max(np.abs(x)) + 1e-9))


def _note(freq: float, seconds: float, harmonics: int = 4) -> np.ndarray:
    t = _t(seconds)
    x = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, harmonics + 1))
    decay = np.exp(-t * 2.0)
    return np.asarray(x * decay * _envelope(len(t), 0.01, 0.05))


def _framed(x: np.ndarray, level: float) -> np.ndarray:
    x = x / (np.max(np.abs(x)) + 1e-9) * level
    return np.concatenate([np.zeros(int(LEAD_S * MODEL_RATE)), x, np.zeros(int(TAIL_S * MODEL_RATE))]).astype(
        np.float32
    )


def nonspeech_set(seed: int = 0) -> list[Sound]:
    """Non-speech cases, 6 to 12 of each kind, at several levels and lengths."""
    rng = np.random.default_rng(seed)
    out: list[Sound] = []
    levels = (0.08, 0.2, 0.45)
    for colour, exponent in (("white", 0.0), ("pink", 1.0), ("brown", 2.0)):
        for i, seconds in enumerate((0.4, 0.8, 1.5, 3.0)):
            x = _coloured(rng, seconds, exponent) * _envelope(int(seconds * MODEL_RATE), 0.03, 0.1)
            out.append(Sound("%s-%d" % (colour, i), "%s noise" % colour, _framed(x, levels[i % 3])))
    for i in range(8):  # clicks: typing, a ticking clock, knocks
        rate = (4, 8, 14, 3)[i % 4]
        seconds = 1.0 + (i % 3)
        x = np.zeros(int(seconds * MODEL_RATE))
        for at in np.cumsum(rng.exponential(1 / rate, size=int(seconds * rate * 2))):
            k = int(at * MODEL_RATE)
            if k + 400 < len(x):
                x[k : k + 400] += rng.normal(size=400) * np.exp(-np.arange(400) / (40 + 40 * (i % 2)))
        out.append(Sound("clicks-%d" % i, "clicks", _framed(x, levels[i % 3])))
    for i, (mains, seconds) in enumerate(((50, 2.0), (60, 2.0), (50, 4.0), (60, 1.0), (100, 3.0), (120, 2.0))):
        t = _t(seconds)
        x = sum(np.sin(2 * np.pi * mains * k * t) * (0.8**k) for k in range(1, 12))
        out.append(Sound("hum-%d" % i, "hum", _framed(np.asarray(x) * _envelope(len(t), 0.2, 0.2), levels[i % 3])))
    for i in range(8):  # breaths: band noise under a slow swell, one to three of them
        parts = []
        for _ in range(1 + i % 3):
            seconds = float(rng.uniform(0.4, 1.1))
            n = int(seconds * MODEL_RATE)
            parts.append(_band(rng, seconds, 250, 2500 + 500 * (i % 3)) * np.hanning(n))
            parts.append(np.zeros(int(rng.uniform(0.3, 0.8) * MODEL_RATE)))
        out.append(Sound("breath-%d" % i, "breath", _framed(np.concatenate(parts), levels[i % 3])))
    for i in range(8):  # tones: a chord, a beep, a sweep
        seconds = 0.6 + 0.4 * (i % 4)
        t = _t(seconds)
        if i % 3 == 0:
            root = 220 * 2 ** (i / 12)
            x = sum(np.sin(2 * np.pi * root * r * t) for r in (1, 1.26, 1.5))
        elif i % 3 == 1:
            x = np.sin(2 * np.pi * (440 + 220 * (i % 2)) * t)
        else:
            x = np.sin(2 * np.pi * (200 + 1800 * t / seconds) * t)
        out.append(Sound("tone-%d" % i, "tones", _framed(np.asarray(x) * _envelope(len(t), 0.01, 0.05), levels[i % 3])))
    scale = (0, 2, 4, 5, 7, 9, 11, 12)
    for i in range(8):  # music: a few bars of notes with harmonics, a melody over a bass
        notes = [
            _note(196 * 2 ** (scale[int(k)] / 12) * (1 + (i % 2)), 0.25 + 0.15 * (i % 3))
            for k in rng.integers(0, len(scale), size=6 + 2 * (i % 3))
        ]
        melody = np.concatenate(notes)
        bass = np.sin(2 * np.pi * 98 * _t(len(melody) / MODEL_RATE)) * 0.5
        out.append(Sound("music-%d" % i, "music", _framed(melody + bass, levels[i % 3])))
    for i in range(8):  # coughs and throat clears: a sharp band-noise burst, one to three of them
        parts = []
        for _ in range(1 + i % 3):
            seconds = float(rng.uniform(0.15, 0.4))
            n = int(seconds * MODEL_RATE)
            parts.append(_band(rng, seconds, 150, 4000) * np.exp(-np.arange(n) / (n / 4)))
            parts.append(np.zeros(int(rng.uniform(0.15, 0.5) * MODEL_RATE)))
        out.append(Sound("cough-%d" % i, "coughs", _framed(np.concatenate(parts), levels[i % 3])))
    for i in range(6):  # a fan or an engine: brown noise with a hum in it, long
        seconds = 2.0 + i
        t = _t(seconds)
        x = _coloured(rng, seconds, 2.0) + 0.3 * np.sin(2 * np.pi * (80 + 20 * i) * t)
        out.append(Sound("fan-%d" % i, "fan", _framed(x * _envelope(len(t), 0.3, 0.3), levels[i % 3])))
    return out


def mixed_set(speeches: list[Speech], seed: int = 1) -> list[Sound]:
    """Each speech with a noise burst (several kinds, in turn) a second before and after it."""
    noises = [s.audio[int(LEAD_S * MODEL_RATE) : -int(TAIL_S * MODEL_RATE)] for s in nonspeech_set(seed)]
    out = []
    gap = np.zeros(MODEL_RATE, np.float32)
    for i, speech in enumerate(speeches):
        before, after = noises[(3 * i) % len(noises)], noises[(3 * i + 7) % len(noises)]
        scale = 0.5 * float(np.max(np.abs(speech.audio)) + 1e-9)
        parts: list[np.ndarray] = [np.zeros(int(LEAD_S * MODEL_RATE), np.float32), before * scale, gap, speech.audio]
        parts += [gap, after * scale, np.zeros(int(TAIL_S * MODEL_RATE), np.float32)]
        audio = np.concatenate(parts).astype(np.float32)
        out.append(Sound("mixed-%d" % i, "mixed", audio, speech.text))
    return out
