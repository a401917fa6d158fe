"""Whether a speaker has finished their turn: Pipecat's smart-turn v3.2 (BSD-2-Clause), a
Whisper-encoder classifier over the last 8 s of 16 kHz audio, run with onnxruntime.

Only the model file is taken from the `pipecat-ai` wheel (stt/turnfile.py fetches it): its
features are computed here. They are Whisper's log-mel (80 bands, 25 ms windows every 10 ms, a
periodic Hann window, the Slaney mel scale, log10 clamped to 8 below its peak, scaled to about
[-1, 1]) of the waveform normalized to zero mean and unit variance, as the model was trained on;
the audio is its last 8 s, or padded with silence before it to 8 s. A test holds them to
faster-whisper's own feature extractor on the same audio.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FILE_NAME = "smart-turn-v3.2-cpu.onnx"
RATE = 16000
SECONDS = 8
SAMPLES = SECONDS * RATE
N_FFT = 400
HOP = 160
MELS = 80
FRAMES = SAMPLES // HOP  # 800


def model_path(setting: str = "") -> Path:
    """Where the model file is: TURN_MODEL, or where `python -m stt.turnfile` puts it (beside
    the Python environment: `<prefix>/share/stt-cluster/`)."""
    return Path(setting) if setting else Path(sys.prefix) / "share" / "stt-cluster" / FILE_NAME


@functools.cache
def mel_filters(n_mels: int = MELS) -> np.ndarray:
    """(n_mels, N_FFT // 2 + 1): triangular filters on the Slaney mel scale, area-normalized
    (librosa's defaults, which Whisper and Resemblyzer both use)."""

    def to_mel(hz: np.ndarray) -> np.ndarray:
        linear = hz * 3.0 / 200.0
        return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * 27.0 / np.log(6.4), linear)

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel >= 15.0, 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0), mel * 200.0 / 3.0)

    edges = to_hz(np.linspace(0.0, float(to_mel(np.array(RATE / 2.0))), n_mels + 2))
    bins = np.fft.rfftfreq(N_FFT, 1.0 / RATE)
    rising = (bins[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    falling = (edges[2:, None] - bins[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    normalized: np.ndarray = filters * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return normalized


def power_spectrum(x: np.ndarray, pad_mode: str) -> np.ndarray:
    """(frames, N_FFT // 2 + 1): |STFT|^2 with 25 ms periodic-Hann windows every 10 ms, centred
    (N_FFT // 2 of `pad_mode` padding each side)."""
    padded = np.pad(x, N_FFT // 2, mode=pad_mode)  # type: ignore[call-overload]
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    window = np.hanning(N_FFT + 1)[:-1]
    power: np.ndarray = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    return power


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Whisper's log-mel of exactly SAMPLES samples: (MELS, FRAMES), float32."""
    power = power_spectrum(np.asarray(audio, dtype=np.float64), "reflect")[:FRAMES]
    mel: np.ndarray = mel_filters() @ power.T
    logs = np.log10(np.maximum(mel, 1e-10))
    logs = np.maximum(logs, logs.max() - 8.0)
    scaled: np.ndarray = ((logs + 4.0) / 4.0).astype(np.float32)
    return scaled


def features(audio: np.ndarray) -> np.ndarray:
    """The model's input for 16 kHz float audio: its last 8 s (silence before it if shorter),
    normalized, as log-mel."""
    x = np.asarray(audio, dtype=np.float32)[-SAMPLES:]
    if len(x) < SAMPLES:
        x = np.concatenate([np.zeros(SAMPLES - len(x), np.float32), x])
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    return log_mel(x)


class TurnModel:
    """The ONNX session; `probability` is thread-safe (onnxruntime's `run` is)."""

    def __init__(self, session: Any, path: Path) -> None:
        self.session = session
        self.path = path

    @classmethod
    def load(cls, path: Path, threads: int = 1) -> TurnModel:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        started = time.perf_counter()
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        model = cls(session, path)
        model.probability(np.zeros(RATE, np.float32))  # the first run allocates: not on a turn's time
        logger.info("end-of-turn model %s loaded in %.2f s", path.name, time.perf_counter() - started)
        return model

    def probability(self, audio: np.ndarray) -> float:
        """How sure the model is that the speech in `audio` (16 kHz, up to its end) is a
        finished turn."""
        [out] = self.session.run(None, {"input_features": features(audio)[None]})
        return float(np.asarray(out).reshape(-1)[0])
