"""Who is speaking: Resemblyzer's GE2E speaker encoder (Apache-2.0), run in numpy.

The network is a 3-layer LSTM of 256 units over 40-band mel power frames (25 ms windows every
10 ms at 16 kHz), then a linear layer, a ReLU and an L2 norm: a 256-d embedding per 1.6 s
window (160 frames). An utterance's embedding is the L2-normed mean of its windows', taken
1.3 times a second, the last kept when it is at least 3/4 covered (Resemblyzer's
`embed_utterance`). Its input is first brought up to -30 dBFS (never down), as Resemblyzer's
preprocessing does.

Its input is prepared as Resemblyzer's `preprocess_wav` does: brought up to -30 dBFS (never
down), and its silences longer than a few frames cut out (WebRTC VAD at mode 3 on 30 ms frames,
smoothed over 8 and dilated by 3 each side): a file's segment, or an utterance with its
pre-roll and trailing silence, is mostly the voice then, not the pauses around it.

Only the weights are taken from the `resemblyzer` wheel (stt/turnfile.py fetches
`pretrained.pt`), read without torch (decoder/torchfile.py). The LSTM: the input projection of
every frame of every window at once, then the recurrence step by step over all windows together.
`docs/benchmarks/speakers.md` records the agreement with Resemblyzer's own torch implementation.
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from common.errors import DecodeError, ModelLoadError
from common.messages import Job, JobKind
from decoder import torchfile
from decoder.turnmodel import HOP, RATE, mel_filters, power_spectrum

logger = logging.getLogger(__name__)
T = TypeVar("T")

FILE_NAME = "pretrained.pt"
MELS = 40
WINDOW_FRAMES = 160  # 1.6 s
WINDOWS_PER_S = 1.3
MIN_COVERAGE = 0.75
# An utterance's embedding averages at most this many of its windows, spread over it: the LSTM
# costs ~10 ms a window on a CPU core and a live final waits for it, while a 20 s utterance's 25
# windows, half of them overlapping, say little more of a voice than 6 do (cosine to the full
# average 0.98 or more, EER unchanged on benchmarks/data/speakers; docs/benchmarks/speakers.md).
MAX_WINDOWS = 6
LAYERS = 3
HIDDEN = 256
TARGET_DBFS = -30.0
DIM = 256


def load_voice(setting: str = "") -> VoiceEncoder | None:
    """The speaker encoder (SPEAKER_MODEL), or None (one warning: sessions that ask for
    speakers are refused)."""
    path = weights_path(setting)
    if not path.is_file():
        logger.warning("no speaker encoder at %s (fetch it: python -m stt.turnfile): no speaker labels", path)
        return None
    try:
        return VoiceEncoder.load(path)
    except ModelLoadError as exc:
        logger.warning("%s: no speaker labels", exc)
        return None


def rounded(v: np.ndarray) -> list[float]:
    return [round(float(x), 5) for x in v]


def embed_segments(encoder: VoiceEncoder, audio: np.ndarray, t0: float, segments: list[dict[str, Any]]) -> None:
    """Each segment's speaker embedding (`voice`), from its span of `audio` (which starts at
    `t0` seconds of the file's time, as the segments' times are)."""
    for seg in segments:
        a = max(0, int((seg["start"] - t0) * RATE))
        b = min(len(audio), int((seg["end"] - t0) * RATE))
        if b - a >= RATE // 10:  # under 0.1 s says nothing of a voice
            seg["voice"] = rounded(encoder.embed(audio[a:b]))


def weights_path(setting: str = "") -> Path:
    """Where the weights are: SPEAKER_MODEL, or where `python -m stt.turnfile` puts them."""
    return Path(setting) if setting else Path(sys.prefix) / "share" / "stt-cluster" / ("resemblyzer-" + FILE_NAME)


def mel_frames(audio: np.ndarray) -> np.ndarray:
    """(frames, 40) mel power frames of 16 kHz float audio (librosa's melspectrogram with
    Resemblyzer's parameters: centred, zero-padded)."""
    power = power_spectrum(np.asarray(audio, dtype=np.float64), "constant")
    mel: np.ndarray = (mel_filters(MELS) @ power.T).T.astype(np.float32)
    return mel


def window_starts(n_samples: int) -> list[int]:
    """The first frame of each 1.6 s window over an utterance of `n_samples` (Resemblyzer's
    `compute_partial_slices` at 1.3 windows a second and 3/4 coverage)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((RATE / WINDOWS_PER_S) / HOP))
    starts = list(range(0, max(1, n_frames - WINDOW_FRAMES + step + 1), step))
    last = starts[-1] * HOP
    coverage = (n_samples - last) / (WINDOW_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts = starts[:-1]
    return starts


def louder(audio: np.ndarray) -> np.ndarray:
    """Brought up to TARGET_DBFS (never down)."""
    x = np.asarray(audio, dtype=np.float32)
    rms = float(np.sqrt(np.mean((x.astype(np.float64) * 32767) ** 2))) if len(x) else 0.0
    if rms <= 0.0:
        return x
    change = TARGET_DBFS - 20 * np.log10(rms / 32767)
    return x if change < 0 else x * np.float32(10 ** (change / 20))


VAD_FRAME = 480  # 30 ms
VAD_SMOOTH = 8
VAD_DILATE = 3


def trim_silences(audio: np.ndarray) -> np.ndarray:
    """The audio with its silences cut out (Resemblyzer's `trim_long_silences`); all of it when
    the VAD hears no voice at all."""
    import webrtcvad

    x = audio[: len(audio) - len(audio) % VAD_FRAME]
    n = len(x) // VAD_FRAME
    if n == 0:
        return audio
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()
    vad = webrtcvad.Vad(3)
    step = VAD_FRAME * 2
    flags = np.array([vad.is_speech(pcm[i * step : (i + 1) * step], RATE) for i in range(n)], dtype=float)
    padded = np.concatenate([np.zeros((VAD_SMOOTH - 1) // 2), flags, np.zeros(VAD_SMOOTH // 2)])
    sums = np.cumsum(padded)
    sums[VAD_SMOOTH:] = sums[VAD_SMOOTH:] - sums[:-VAD_SMOOTH]
    voiced = np.round(sums[VAD_SMOOTH - 1 :] / VAD_SMOOTH).astype(bool)
    kept = np.convolve(voiced.astype(int), np.ones(2 * VAD_DILATE + 1, int), mode="same") > 0
    if not kept.any():
        return audio
    trimmed: np.ndarray = x[np.repeat(kept, VAD_FRAME)]
    return trimmed


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (np.tanh(0.5 * x) + 1.0)
    return out


class VoiceEncoder:
    def __init__(self, state: dict[str, np.ndarray], path: Path) -> None:
        self.path = path
        try:
            self.layers = [
                (
                    np.ascontiguousarray(state["lstm.weight_ih_l%d" % n].T),
                    np.ascontiguousarray(state["lstm.weight_hh_l%d" % n].T),
                    state["lstm.bias_ih_l%d" % n] + state["lstm.bias_hh_l%d" % n],
                )
                for n in range(LAYERS)
            ]
            self.linear = (np.ascontiguousarray(state["linear.weight"].T), state["linear.bias"])
        except KeyError as exc:
            raise ModelLoadError("%s lacks %s: not Resemblyzer's speaker encoder" % (path, exc)) from exc
        if self.layers[0][0].shape != (MELS, 4 * HIDDEN) or self.linear[0].shape != (HIDDEN, DIM):
            raise ModelLoadError("%s has the wrong shapes for Resemblyzer's speaker encoder" % path)

    @classmethod
    def load(cls, path: Path) -> VoiceEncoder:
        started = time.perf_counter()
        if not path.is_file():
            raise ModelLoadError("no speaker encoder weights at %s (python -m stt.turnfile fetches them)" % path)
        saved = torchfile.load(path)
        state = saved.get("model_state") if isinstance(saved, dict) else None
        if not isinstance(state, dict):
            raise ModelLoadError("%s holds no model_state" % path)
        encoder = cls(state, path)
        logger.info("speaker encoder %s loaded in %.2f s", path.name, time.perf_counter() - started)
        return encoder

    def windows(self, mels: np.ndarray) -> np.ndarray:
        """(windows, 256) L2-normed embeddings of (windows, 160, 40) mel frames."""
        x = mels.astype(np.float32)
        batch, steps, _ = x.shape
        for w_ih, w_hh, bias in self.layers:
            projected = (x.reshape(batch * steps, -1) @ w_ih + bias).reshape(batch, steps, 4 * HIDDEN)
            h = np.zeros((batch, HIDDEN), np.float32)
            c = np.zeros((batch, HIDDEN), np.float32)
            out = np.empty((batch, steps, HIDDEN), np.float32)
            for t in range(steps):
                gates = projected[:, t] + h @ w_hh
                i, f, g, o = np.split(gates, 4, axis=1)  # PyTorch's gate order
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
                out[:, t] = h
            x = out
        raw = np.maximum(h @ self.linear[0] + self.linear[1], 0.0)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        normed: np.ndarray = raw / np.maximum(norms, 1e-12)
        return normed

    def embed(self, audio: np.ndarray, partials: bool = False) -> np.ndarray:
        """The utterance's 256-d L2-normed embedding (16 kHz float audio); with `partials`,
        its windows' embeddings instead (one per 1/1.3 s, for telling voices apart within it)."""
        x = trim_silences(louder(audio))
        starts = window_starts(len(x))
        if not partials and len(starts) > MAX_WINDOWS:
            starts = [starts[round(float(i))] for i in np.linspace(0, len(starts) - 1, MAX_WINDOWS)]
        need = (starts[-1] + WINDOW_FRAMES) * HOP
        if need >= len(x):
            x = np.pad(x, (0, need - len(x)))
        mel = mel_frames(x)
        windows = self.windows(np.stack([mel[s : s + WINDOW_FRAMES] for s in starts]))
        if partials:
            return windows
        mean = windows.mean(axis=0)
        out: np.ndarray = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        return out


class SpeakerVoices:
    """A decoder's speaker embeddings for the jobs that ask for them: a live final's begun beside
    its decode (it needs no text), a file part's per segment once its text is known."""

    def __init__(self, encoder: VoiceEncoder | None) -> None:
        self.encoder = encoder
        self._pool: ThreadPoolExecutor | None = None

    def beside(self, job: Job, audio: np.ndarray) -> Future[np.ndarray] | None:
        if not job.speakers or self.encoder is None or not len(audio) or job.kind == JobKind.BATCH:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="voice")
        return self._pool.submit(self.encoder.embed, audio)

    def add(self, job: Job, audio: np.ndarray, output: T, beside: Future[np.ndarray] | None = None) -> T:
        """`output` (a DecodeOutput, or a DecodeError left as it is) with its speaker embedding,
        added once its decode is done and it has left its batch (the others' decodes do not
        wait for it)."""
        if not job.speakers or self.encoder is None or not len(audio) or isinstance(output, DecodeError):
            return output
        if beside is not None:
            output.voice = rounded(beside.result())  # type: ignore[attr-defined]
            return output
        started = time.perf_counter()
        segments = getattr(output, "segments", None)
        if job.kind == JobKind.BATCH and segments:
            # A file's part may hold several speakers: the gateway labels its segments.
            embed_segments(self.encoder, audio, job.t0, segments)
        else:
            output.voice = rounded(self.encoder.embed(audio))  # type: ignore[attr-defined]
        output.decode_ms += (time.perf_counter() - started) * 1000.0  # type: ignore[attr-defined]
        return output
