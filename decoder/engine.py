"""The faster-whisper engine: one model per process, decode calls made off the event loop."""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import DecodeError, ModelLoadError
from common.messages import Job
from common.settings import Settings
from decoder import profiles
from decoder.batching import BatchingModel

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0  # how often a slow model load says it is still going

_CPU_FALLBACK = {"float16": "int8", "int8_float16": "int8", "bfloat16": "int8",
                 "int8_bfloat16": "int8"}


def resolve_device(settings: Settings) -> tuple[str, str]:
    """(device, compute type) for this machine: `auto` picks CUDA when a GPU is visible."""
    import ctranslate2

    device = settings.DEVICE
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute = settings.COMPUTE_TYPE
    supported = ctranslate2.get_supported_compute_types(device, settings.DEVICE_INDEX)
    if compute not in supported and compute != "default":
        fallback = _CPU_FALLBACK.get(compute, "default") if device == "cpu" else "default"
        logger.warning("compute type %s is not supported on %s; using %s", compute, device, fallback)
        compute = fallback
    return device, compute


@dataclass
class DecodeOutput:
    text: str
    language: str | None
    words: list[dict[str, Any]] | None
    no_speech: bool
    audio_s: float
    decode_ms: float


def model_path(name: str) -> str:
    """A local directory as is; a faster-whisper size name or Hub id from the cache, else
    downloaded now with a progress bar (faster-whisper's own download shows none)."""
    if os.path.isdir(name):
        return name
    if name.startswith((".", "/", "~")) or os.sep + os.sep in name:
        raise ModelLoadError("no model directory at %s" % name)
    from faster_whisper.utils import _MODELS, download_model

    try:
        return str(download_model(name, local_files_only=True))
    except Exception:  # not cached (huggingface_hub raises several kinds)
        pass
    import huggingface_hub

    repo = name if "/" in name else _MODELS.get(name)
    if repo is None:
        raise ModelLoadError("unknown model %r: use a faster-whisper size name (%s), a Hub id or a directory"
                             % (name, ", ".join(_MODELS)))
    logger.info("model %s is not cached: downloading %s (first use)", name, repo)
    return str(huggingface_hub.snapshot_download(
        repo, allow_patterns=["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json",
                              "vocabulary.*"]))


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device, self.compute_type = resolve_device(settings)
        self.model_name = settings.MODEL_NAME
        self.model: Any = None
        self.batcher: Any = None
        self._pool: ThreadPoolExecutor | None = None

    def load(self) -> None:
        """Load the model (downloading a size name on first use), logging progress while it takes."""
        from faster_whisper import WhisperModel

        started = time.monotonic()
        loaded = threading.Event()

        def progress() -> None:
            while not loaded.wait(PROGRESS_EVERY_S):
                logger.info("still loading model %s (%.0fs)", self.model_name, time.monotonic() - started)

        ticker = threading.Thread(target=progress, name="load-progress", daemon=True)
        ticker.start()
        try:
            path = model_path(self.model_name)
            logger.info("loading model %s on %s:%d (%s)", self.model_name, self.device,
                        self.settings.DEVICE_INDEX, self.compute_type)
            self.model = WhisperModel(
                path,
                device=self.device,
                device_index=self.settings.DEVICE_INDEX,
                compute_type=self.compute_type,
                cpu_threads=self.settings.CPU_THREADS,
                num_workers=1,
            )
        except Exception as exc:  # any loader failure means this process cannot serve
            raise ModelLoadError("cannot load model %r: %s" % (self.model_name, exc)) from exc
        finally:
            loaded.set()
            ticker.join()
        logger.info("model %s loaded in %.1fs", self.model_name, time.monotonic() - started)
        sot = self.model.hf_tokenizer.token_to_id("<|startoftranscript|>")
        self.batcher = BatchingModel(self.model.model, sot)
        self.model.model = self.batcher
        self._pool = ThreadPoolExecutor(max_workers=self.settings.DECODE_BATCH, thread_name_prefix="decode")

    def _tokens(self, text: str) -> list[int]:
        if not text.strip():
            return []
        return list(self.model.hf_tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids)

    def options(self, job: Job, audio_s: float) -> dict[str, Any]:
        """The transcribe options for this job (also what tests use for direct decodes).

        The prompt is the last PROMPT_TOKENS tokens of the job's prompt text, so that most jobs
        put <|startoftranscript|> at the same index and can share a batched generate."""
        from faster_whisper.tokenizer import Tokenizer

        previous = self._tokens(job.prompt)[-profiles.PROMPT_TOKENS:]
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task=job.task,
                              language=job.lang or "en")
        prefix = job.prefix if job.kind == "interim" else None
        prompt_len = len(self.model.get_prompt(tokenizer, previous, without_timestamps=True, prefix=prefix))
        budget = profiles.token_budget(audio_s, self.settings, prompt_len)
        return profiles.options_for(job, self.settings, budget, previous or None)

    def decode_one(self, job: Job, audio: np.ndarray) -> DecodeOutput:
        """Decode one job. Runs in the decode thread; raises DecodeError on any model failure."""
        audio_s = len(audio) / 16000.0
        started = time.perf_counter()
        try:
            segments, info = self.model.transcribe(audio, **self.options(job, audio_s))
            segments = list(segments)
        except Exception as exc:
            raise DecodeError("%s: %s" % (type(exc).__name__, exc)) from exc
        return self._output(job, segments, info.language, audio_s,
                            (time.perf_counter() - started) * 1000.0)

    def decode_many(self, jobs: list[tuple[Job, np.ndarray]]) -> list[DecodeOutput | DecodeError]:
        """Decode jobs of one kind, up to DECODE_BATCH at a time together (see
        decoder/batching.py); each job fails alone."""
        size = self.settings.DECODE_BATCH
        outputs: list[DecodeOutput | DecodeError] = []
        for i in range(0, len(jobs), size):
            outputs += self._decode_together(jobs[i:i + size])
        return outputs

    def _decode_together(self, jobs: list[tuple[Job, np.ndarray]]) -> list[DecodeOutput | DecodeError]:
        if len(jobs) == 1 or self._pool is None:
            return [self._decode_caught(job, audio) for job, audio in jobs]
        pool = self._pool
        # Every member must have a thread of its own: the batch waits for all of them.
        self.batcher.begin(len(jobs))

        def member(job: Job, audio: np.ndarray) -> DecodeOutput | DecodeError:
            try:
                return self._decode_caught(job, audio)
            finally:
                self.batcher.leave()

        futures = [pool.submit(member, job, audio) for job, audio in jobs]
        return [f.result() for f in futures]

    def _decode_caught(self, job: Job, audio: np.ndarray) -> DecodeOutput | DecodeError:
        try:
            return self.decode_one(job, audio)
        except DecodeError as exc:
            return exc

    def _output(self, job: Job, segments: list[Any], language: str | None, audio_s: float,
                decode_ms: float) -> DecodeOutput:
        text, kept = judge(segments, self.settings)
        words = None
        if job.kind == "final" and job.word_timestamps:
            words = [
                {"word": w.word, "start": round(job.t0 + w.start, 3), "end": round(job.t0 + w.end, 3),
                 "prob": round(float(w.probability), 3)}
                for s in kept for w in (s.words or [])
            ]
        return DecodeOutput(text=text, language=language, words=words, no_speech=not text,
                            audio_s=audio_s, decode_ms=decode_ms)


def judge(segments: list[Any], settings: Settings) -> tuple[str, list[Any]]:
    """Hallucination guards on top of faster-whisper's own (which already drop windows with a
    high no-speech probability and a low log-probability): a segment still too repetitive after
    every fallback temperature is not speech."""
    kept = [
        s for s in segments
        if not (settings.COMPRESSION_RATIO_THRESHOLD and s.compression_ratio
                > settings.COMPRESSION_RATIO_THRESHOLD and s.temperature >= profiles.FALLBACK_TEMPERATURES[-1])
    ]
    return "".join(s.text for s in kept).strip(), kept
