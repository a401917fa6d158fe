"""Real speech with known words and known pauses, made with espeak-ng (tests, benchmarks)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.audio import MODEL_RATE, float32_to_pcm16

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
)


@dataclass
class Speech:
    """16 kHz mono float32 audio and, per sentence, where its speech starts and ends (s)."""

    audio: np.ndarray
    spans: list[tuple[float, float]]
    texts: list[str]

    @property
    def pcm16(self) -> bytes:
        return float32_to_pcm16(self.audio)

    def pcm16_at(self, rate: int) -> bytes:
        """The same speech as PCM16 at another sample rate (what a client at that rate sends)."""
        import soxr

        return float32_to_pcm16(self.audio if rate == MODEL_RATE else soxr.resample(self.audio, MODEL_RATE, rate))

    @property
    def duration(self) -> float:
        return len(self.audio) / MODEL_RATE

    @property
    def text(self) -> str:
        return " ".join(self.texts)


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


SPEECH_DIR = "STT_SPEECH_DIR"  # made speech kept as WAV files, for a machine without espeak-ng


def _kept(text: str, voice: str, speed: int) -> Path | None:
    """Where `synth` keeps this sentence when STT_SPEECH_DIR is set (`scripts/gpu-check
    --prepare` makes them, for a GPU machine that has no espeak-ng)."""
    folder = os.environ.get(SPEECH_DIR)
    if not folder:
        return None
    digest = hashlib.sha1(("%s|%d|%s" % (voice, speed, text)).encode()).hexdigest()[:16]
    return Path(folder) / ("%s.wav" % digest)


def synth(text: str, voice: str = "en-us", speed: int = 160) -> np.ndarray:
    """One sentence as 16 kHz float32, leading and trailing silence trimmed (read from
    STT_SPEECH_DIR when it was kept there, and kept there when made)."""
    import soundfile as sf

    kept = _kept(text, voice, speed)
    if kept is not None and kept.exists():
        return np.asarray(sf.read(kept, dtype="float32")[0], dtype=np.float32)
    if not have_espeak():
        raise RuntimeError(
            "espeak-ng is not installed and %r is not among the made sentences in %s=%s "
            "(make them where espeak-ng is: scripts/gpu-check --prepare)"
            % (text, SPEECH_DIR, os.environ.get(SPEECH_DIR, ""))
        )
    out = _made(text, voice, speed)
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        sf.write(kept, out, MODEL_RATE, subtype="FLOAT")
    return out


def _made(text: str, voice: str, speed: int) -> np.ndarray:
    import soundfile as sf
    import soxr

    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True, capture_output=True, timeout=60
    ).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if rate != MODEL_RATE:
        audio = soxr.resample(audio, rate, MODEL_RATE).astype(np.float32)
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    if len(voiced):
        audio = audio[voiced[0] : voiced[-1] + 1]
    out: np.ndarray = audio.astype(np.float32) * 0.8
    return out


def conversation(
    texts: list[str] | tuple[str, ...],
    pause_s: float | list[float] = 1.2,
    lead_s: float = 0.5,
    tail_s: float = 1.5,
    noise: float = 0.0,
    seed: int = 0,
    voice: str = "en-us",
    speed: int = 160,
) -> Speech:
    """Sentences separated by silence (`pause_s`: one length, or one per gap; optionally low
    noise), spoken by one espeak-ng voice at `speed` words per minute, with known spans."""
    pauses = [pause_s] * len(texts) if isinstance(pause_s, (int, float)) else list(pause_s)
    if len(pauses) < len(texts) - 1:
        raise ValueError("%d pauses for %d sentences" % (len(pauses), len(texts)))
    parts: list[np.ndarray] = [np.zeros(int(lead_s * MODEL_RATE), np.float32)]
    spans = []
    pos = len(parts[0])
    for i, text in enumerate(texts):
        clip = synth(text, voice=voice, speed=speed)
        spans.append((pos / MODEL_RATE, (pos + len(clip)) / MODEL_RATE))
        parts.append(clip)
        pos += len(clip)
        gap = np.zeros(int((pauses[i] if i < len(texts) - 1 else tail_s) * MODEL_RATE), np.float32)
        parts.append(gap)
        pos += len(gap)
    audio = np.concatenate(parts)
    if noise:
        rng = np.random.default_rng(seed)
        audio = audio + rng.normal(0, noise, len(audio)).astype(np.float32)
    return Speech(audio=audio.astype(np.float32), spans=spans, texts=list(texts))


def recording(path: str, text: str, tail_s: float = 1.5) -> Speech:
    """A recorded file (any rate and channels) as one span of known text, with `tail_s` of
    silence added so that its end of speech is heard."""
    from client.audiofile import read_file

    audio = np.frombuffer(read_file(path), dtype="<i2").astype(np.float32) / 32768.0
    voiced = np.flatnonzero(np.abs(audio) > 0.02)
    span = (voiced[0] / MODEL_RATE, (voiced[-1] + 1) / MODEL_RATE) if len(voiced) else (0.0, len(audio) / MODEL_RATE)
    audio = np.concatenate([audio, np.zeros(int(tail_s * MODEL_RATE), np.float32)])
    return Speech(audio=audio, spans=[span], texts=[text])


def joined(parts: list[Speech], pauses: list[float] | float = 1.5, lead_s: float = 0.5) -> Speech:
    """Recordings one after another with `pauses` of silence between them (one length, or one
    per gap, used in turn), their spans and texts kept."""
    gaps = [pauses] if isinstance(pauses, (int, float)) else list(pauses)
    audio: list[np.ndarray] = [np.zeros(int(lead_s * MODEL_RATE), np.float32)]
    spans, texts = [], []
    pos = len(audio[0])
    for i, part in enumerate(parts):
        spans += [(pos / MODEL_RATE + a, pos / MODEL_RATE + b) for a, b in part.spans]
        texts += part.texts
        gap = np.zeros(int(gaps[i % len(gaps)] * MODEL_RATE), np.float32)
        audio += [part.audio, gap]
        pos += len(part.audio) + len(gap)
    return Speech(audio=np.concatenate(audio), spans=spans, texts=texts)
