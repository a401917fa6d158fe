"""Cross-session batching under faster-whisper's own decoding logic.

`WhisperModel.transcribe` does everything a job needs (prompt layout, temperature fallback,
no-speech and log-probability guards, segments, word timestamps) but calls CTranslate2 with a
batch of one. To decode N jobs together without re-implementing any of that, the engine runs
N `transcribe` calls in N threads against this proxy of the CTranslate2 model:

- `encode` records the mel features instead of encoding them;
- `generate` waits until every thread of the batch is either waiting in `generate` or done,
  then one thread runs a single `generate` per group of compatible requests, on the stacked
  features: CTranslate2 encodes the whole group in one batched call and decodes it in one
  batched search. Requests are compatible when every generation option is equal (beam size,
  temperature, max_length, …) and their <|startoftranscript|> token sits at the same prompt
  index (a CTranslate2 requirement);
- anything else (`detect_language`, `align` for word timestamps) passes through, one job at a
  time; `align` reuses the job's encoder output from its batch when a job of the group asked for
  word timestamps (the group is then encoded explicitly and its output kept), else it encodes.

On a GPU (`pad=True`) requests of different encoder windows are one group: each is padded to the
longest window in it (padding costs a GPU little; many small groups waste it). On a CPU only
requests of one window share a group (padding there costs real time).

A group whose batched call raises is retried one request at a time, so a bad job fails alone.
Outside a batch (one job, or DECODE_BATCH=1) the proxy passes every call straight through.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class Features:
    """What `encode` returns inside a batch: the mel features, encoded later with the group."""

    def __init__(self, mel: np.ndarray, frames: int, words: bool) -> None:
        self.mel = mel  # [n_mels, frames or more]: cut to the group's window when it is encoded
        self.frames = frames
        self.words = words  # its job wants word timestamps: keep its encoder output for `align`
        self.encoded: np.ndarray | None = None  # [frames // 2, d_model], once its group ran


@dataclass
class _Request:
    features: Features
    prompt: list[int]
    kwargs: dict[str, Any]
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def key(self, sot: int, pad: bool) -> tuple[Any, ...]:
        index = self.prompt.index(sot) if sot in self.prompt else -1
        frames = 0 if pad else self.features.frames
        return index, frames, tuple(sorted((k, repr(v)) for k, v in self.kwargs.items()))


FRAMES_PER_S = 100  # mel frames (10 ms hop)
WINDOW_FRAMES = 3000  # Whisper's 30 s window
WINDOW_STEP_FRAMES = 200  # windows are cut in 2 s steps, so that jobs of similar length batch


def window_frames(clip_s: float, pad_s: float, min_s: float = 0.0) -> int:
    """The encoder window for a clip: the clip and `pad_s` of what follows (faster-whisper's zero
    padding), at least `min_s`, rounded up to a step, never more than Whisper's 30 s."""
    seconds = max(clip_s + pad_s, min_s)
    frames = int(np.ceil(seconds * FRAMES_PER_S / WINDOW_STEP_FRAMES)) * WINDOW_STEP_FRAMES
    return max(WINDOW_STEP_FRAMES, min(WINDOW_FRAMES, frames))


class BatchingModel:
    """Stands in for `WhisperModel.model` (a `ctranslate2.models.Whisper`).

    It also cuts the encoder's window: CTranslate2 encodes mel features shorter than Whisper's
    3000 frames, and the encoder's cost is proportional to them. A decode thread says how many
    frames its job needs (`window`); `encode` keeps only those."""

    def __init__(self, model: Any, sot_token: int, pad: bool = False) -> None:
        self._model = model
        self._sot = sot_token
        self.pad = pad
        self._window = threading.local()
        self._cond = threading.Condition()
        self._active = 0
        self._waiting: list[_Request] = []
        self.calls = 0  # batched generate calls made (for tests and metrics)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    # --- batch membership ---------------------------------------------------------------

    def begin(self, n: int) -> None:
        with self._cond:
            self._active = n

    def leave(self) -> None:
        """A thread of the batch is done with the model (finished or failed)."""
        with self._cond:
            self._active -= 1
            round_ = self._take_round()
        if round_:
            self._run(round_)

    def _take_round(self) -> list[_Request]:
        if self._waiting and len(self._waiting) >= self._active:
            round_, self._waiting = self._waiting, []
            return round_
        return []

    # --- the model's API ----------------------------------------------------------------

    def window(self, frames: int, words: bool = False) -> None:
        """The encoder window of this thread's next decodes (WINDOW_FRAMES: the whole), and
        whether they want word timestamps."""
        self._window.frames = frames
        self._window.words = words

    def _cut(self, features: Any, frames: int | None = None) -> np.ndarray:
        mel = np.asarray(features)
        frames = frames or getattr(self._window, "frames", WINDOW_FRAMES)
        return np.ascontiguousarray(mel[..., :frames]) if frames < mel.shape[-1] else mel

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        if self._active <= 1:
            if getattr(self._window, "frames", WINDOW_FRAMES) >= WINDOW_FRAMES:
                return self._model.encode(features, to_cpu=to_cpu)
            import ctranslate2

            return self._model.encode(ctranslate2.StorageView.from_array(self._cut(features)), to_cpu=to_cpu)
        frames = getattr(self._window, "frames", WINDOW_FRAMES)
        mel = np.asarray(features)[0] if self.pad else self._cut(features)[0]
        return Features(mel, frames, getattr(self._window, "words", False))

    def _real(self, encoder_output: Any) -> Any:
        if isinstance(encoder_output, Features):
            import ctranslate2

            if encoder_output.encoded is not None:
                return ctranslate2.StorageView.from_array(np.ascontiguousarray(encoder_output.encoded[None]))
            mel = self._cut(encoder_output.mel, encoder_output.frames)
            return self._model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])))
        return encoder_output

    def detect_language(self, encoder_output: Any, *args: Any, **kwargs: Any) -> Any:
        return self._model.detect_language(self._real(encoder_output), *args, **kwargs)

    def align(self, encoder_output: Any, *args: Any, **kwargs: Any) -> Any:
        return self._model.align(self._real(encoder_output), *args, **kwargs)

    def generate(self, encoder_output: Any, prompts: list[list[int]], **kwargs: Any) -> Any:
        if not isinstance(encoder_output, Features):
            return self._model.generate(encoder_output, prompts, **kwargs)
        request = _Request(encoder_output, prompts[0], kwargs)
        with self._cond:
            self._waiting.append(request)
            round_ = self._take_round()
        if round_:
            self._run(round_)
        request.done.wait()
        if request.error is not None:
            raise request.error
        return [request.result]

    # --- running a round ----------------------------------------------------------------

    def _run(self, round_: list[_Request]) -> None:
        groups: dict[tuple[Any, ...], list[_Request]] = defaultdict(list)
        for request in round_:
            groups[request.key(self._sot, self.pad)].append(request)
        for group in groups.values():
            try:
                self._generate(group)
            except Exception as exc:  # one bad request must not fail the others: retry alone
                if len(group) == 1:
                    group[0].error = exc
                else:
                    logger.warning("batched generate of %d failed (%s); retrying one by one", len(group), exc)
                    for request in group:
                        try:
                            self._generate([request])
                        except Exception as one:
                            request.error = one
            finally:
                for request in group:
                    request.done.set()

    def _generate(self, group: list[_Request]) -> None:
        import ctranslate2

        frames = max(r.features.frames for r in group)
        mels = np.ascontiguousarray(np.stack([r.features.mel[..., :frames] for r in group]))
        self.calls += 1
        features = ctranslate2.StorageView.from_array(mels)
        if any(r.features.words for r in group):
            # Encoded once, here, and kept: each job's word alignment reuses its part.
            encoded = self._model.encode(features, to_cpu=True)
            kept = _as_numpy(encoded)
            for i, request in enumerate(group):
                request.features.encoded = None if kept is None else kept[i]
            features = encoded
        results = self._model.generate(features, [r.prompt for r in group], **group[0].kwargs)
        for request, result in zip(group, results):
            request.result = result


def _as_numpy(encoded: Any) -> np.ndarray | None:
    """The encoder's output as a numpy array, or None where it has none: CTranslate2 gives a
    bfloat16 StorageView no array form (`compute_type=bfloat16` on a GPU), and then each job's
    alignment encodes its own part again rather than fail the batch."""
    try:
        return np.asarray(encoded)
    except (TypeError, ValueError, AttributeError) as exc:
        logger.debug("encoder output kept on the model's side (%s): alignment encodes again", exc)
        return None
