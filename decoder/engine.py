"""The faster-whisper engine: one model per process, decode calls made off the event loop."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from common.errors import DecodeError, ModelLoadError
from common.messages import BATCH, KINDS, Job
from common.process import threads_per_lane, usable_cores
from common.settings import Settings
from decoder import models, profiles
from decoder.batching import WINDOW_FRAMES, BatchingModel, window_frames
from decoder.text import (
    cut_loop,
    drop_context_words,
    drop_runaway_segments,
    echoes,
    first_words,
    strip_context,
)

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0  # how often a slow model load says it is still going

T = TypeVar("T")

_CPU_FALLBACK = {"float16": "int8", "int8_float16": "int8", "bfloat16": "int8", "int8_bfloat16": "int8"}


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
    confidence: float = 0.0  # exp(average token log-probability)
    segments: list[dict[str, Any]] | None = None  # a file part's timestamped segments (file times)


class Engine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device, self.compute_type = resolve_device(settings)
        self.model_name = settings.MODEL_NAME  # what is served, once loaded (see decoder/models.py)
        self.model: Any = None  # the final lane's WhisperModel (its .model is that lane's batcher)
        self.batcher: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._lanes: dict[str, Lane] = {}

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
            choice = models.resolve(self.settings.MODEL_NAME, self.settings.is_set("MODEL_NAME"))
            self.model_name = choice.name
            logger.info(
                "loading model %s on %s:%d (%s)",
                self.model_name,
                self.device,
                self.settings.DEVICE_INDEX,
                self.compute_type,
            )
            whispers = self._load_lanes(WhisperModel, choice.path)
        except ModelLoadError:
            raise
        except Exception as exc:  # any loader failure means this process cannot serve
            raise ModelLoadError("cannot load model %r: %s" % (self.model_name, exc)) from exc
        finally:
            loaded.set()
            ticker.join()
        logger.info("model %s loaded in %.1fs", self.model_name, time.monotonic() - started)
        sot = whispers["final"].hf_tokenizer.token_to_id("<|startoftranscript|>")
        for kind in KINDS:
            # A shallow copy per lane: the same tokenizer and feature extractor, its own batcher
            # (a batch is gathered per lane) and its own decode threads.
            whisper = copy.copy(whispers[kind])
            whisper.model = BatchingModel(whispers[kind].model, sot)
            pool = ThreadPoolExecutor(max_workers=self.settings.DECODE_BATCH, thread_name_prefix="decode-" + kind)
            self._lanes[kind] = Lane(whisper, whisper.model, pool)
        final = self._lanes["final"]
        self.model, self.batcher, self._pool = final.model, final.batcher, final.pool

    def _load_lanes(self, factory: Any, path: str) -> dict[str, Any]:
        """The WhisperModel each lane decodes with. Both lanes have a CTranslate2 worker of their
        own, so a final never queues behind a running interim or file part. On a GPU they share
        one copy of the weights. On a CPU the background lane (interims, file parts) gets a copy
        built in a thread at BACKGROUND_NICE: CTranslate2's worker and its OpenMP threads inherit
        that priority, so a final decoding beside it keeps the cores (two lanes of equal priority
        halve a final's speed whenever a file part or an interim runs beside it)."""
        nice = self.settings.BACKGROUND_NICE if self.device == "cpu" else 0

        def load(workers: int) -> Any:
            return factory(
                path,
                device=self.device,
                device_index=self.settings.DEVICE_INDEX,
                compute_type=self.compute_type,
                cpu_threads=cpu_threads(self.settings),
                num_workers=workers,
            )

        if not nice:
            shared = load(len(KINDS))
            return {kind: shared for kind in KINDS}
        return {"final": load(1), "interim": at_nice(nice, lambda: load(1))}

    @property
    def multilingual(self) -> bool:
        """Whether the loaded model hears other languages than English."""
        return bool(self.model is not None and self.model.model.is_multilingual)

    def _tokens(self, text: str) -> list[int]:
        if not text.strip():
            return []
        return list(self.model.hf_tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids)

    def options(self, job: Job, audio_s: float, with_context: bool = False) -> dict[str, Any]:
        """The transcribe options for this job (also what tests use for direct decodes).

        The prompt is the last PROMPT_TOKENS tokens of the job's prompt text, so that most jobs
        put <|startoftranscript|> at the same index and can share a batched generate. The forced
        prefix is the context's text (`with_context`: the audio starts with the context) followed
        by the job's own prefix; the token budget is for `audio_s`, the job's own audio."""
        from faster_whisper.tokenizer import Tokenizer

        previous = self._tokens(job.prompt)[-profiles.PROMPT_TOKENS :]
        if job.hotwords:
            # Where faster-whisper's own `hotwords` go (after <|startofprev|>, before the previous
            # text), but also when a prefix is forced: faster-whisper drops its hotwords then, and
            # a final decoded after its context always has one.
            previous = self._tokens(job.hotwords)[: profiles.HOTWORD_TOKENS] + previous
        tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.model.model.is_multilingual, task=job.task, language=job.lang or "en"
        )
        prefix = forced_prefix(job, with_context)
        prompt_len = len(self.model.get_prompt(tokenizer, previous, without_timestamps=True, prefix=prefix or None))
        budget = profiles.token_budget(audio_s, self.settings, prompt_len, len(self._tokens(prefix)))
        return profiles.options_for(job, self.settings, budget, previous or None, prefix)

    def decode_one(self, job: Job, audio: np.ndarray, context: np.ndarray | None = None) -> DecodeOutput:
        """Decode one job, after `context` (the previous utterance's audio, whose text is
        job.context_text) when given. Runs in a decode thread; raises DecodeError on any model
        failure.

        What came before helps the model hear continuous speech, and sometimes leads it astray:
        after a forced text that ends a sentence it may end the transcript there, whatever
        follows; and when the new audio is short, unclear or no speech at all, it says again
        what it was given (the context, as it hears it this time, or the prompt's last words).
        A final whose text echoes what came before is decoded again with less of it: alone
        after its context, then without its prompt too. A final is never worse off than a
        decode of its audio alone."""
        if job.kind == "interim":
            return self._decode(job, audio, None)
        total_ms = 0.0
        if context is not None and len(context) and job.context_text.strip():
            output = self._decode(job, audio, context)
            total_ms += output.decode_ms
            if not output.no_speech and not echoes(output.text, job.context_text):
                return output
        output = self._decode(job, audio, None)
        total_ms += output.decode_ms
        if job.prompt and echoes(output.text, job.prompt):
            output = self._decode(dataclasses.replace(job, prompt=""), audio, None)
            total_ms += output.decode_ms
        output.decode_ms = total_ms
        return output

    @contextlib.contextmanager
    def windowed(self, job: Job, clip_s: float) -> Iterator[Lane]:
        """The lane of the job's kind, its encoder window cut for a clip of `clip_s` seconds
        (context included) in this thread while the block runs."""
        pad = self.settings.INTERIM_WINDOW_PAD_S if job.kind == "interim" else self.settings.FINAL_WINDOW_PAD_S
        lane = self.lane(job.kind)
        lane.batcher.window(window_frames(clip_s, pad, self.settings.WINDOW_MIN_S))
        try:
            yield lane
        finally:
            # The window is this job's: a later transcribe in this thread gets the whole again.
            lane.batcher.window(WINDOW_FRAMES)

    def lane(self, kind: str) -> Lane:
        # File jobs take turns with interims in the background lane (decoder/worker.py).
        kind = "interim" if kind == BATCH else kind
        return self._lanes.get(kind) or Lane(self.model, self.batcher, self._pool)

    def _decode(self, job: Job, audio: np.ndarray, context: np.ndarray | None) -> DecodeOutput:
        samples = np.concatenate([context, audio]) if context is not None else audio
        context_s = (len(samples) - len(audio)) / 16000.0
        audio_s = len(audio) / 16000.0
        started = time.perf_counter()
        try:
            with self.windowed(job, len(samples) / 16000.0) as lane:
                segments, info = lane.model.transcribe(samples, **self.options(job, audio_s, context is not None))
                if job.kind == BATCH:
                    # A file part is decoded with timestamps: its segments are its subtitle
                    # cues. One that starts in the padding after the audio is not speech.
                    kept = [seg for seg in segments if seg.start < audio_s - 0.1]
                else:
                    # Without timestamps a window is one segment, and a clip (context included)
                    # always fits one window. Taking only that segment matters with word
                    # timestamps: faster-whisper then seeks back to the last word's end and
                    # decodes the trailing silence again, where the model hallucinates.
                    first = next(iter(segments), None)
                    kept = [first] if first is not None else []
        except Exception as exc:
            raise DecodeError("%s: %s" % (type(exc).__name__, exc)) from exc
        return self._output(
            job,
            kept,
            info.language,
            audio_s,
            context_s,
            (time.perf_counter() - started) * 1000.0,
        )

    def decode_many(
        self, jobs: list[tuple[Job, np.ndarray]], contexts: list[np.ndarray | None] | None = None
    ) -> list[DecodeOutput | DecodeError]:
        """Decode jobs of one kind, up to DECODE_BATCH at a time together (see
        decoder/batching.py); each job fails alone. `contexts[i]` is job i's context audio."""
        size = self.settings.DECODE_BATCH
        items = [(job, audio, contexts[i] if contexts else None) for i, (job, audio) in enumerate(jobs)]
        outputs: list[DecodeOutput | DecodeError] = []
        for i in range(0, len(items), size):
            outputs += self._decode_together(items[i : i + size])
        return outputs

    def _decode_together(
        self, jobs: list[tuple[Job, np.ndarray, np.ndarray | None]]
    ) -> list[DecodeOutput | DecodeError]:
        lane = self.lane(jobs[0][0].kind)
        if len(jobs) == 1 or lane.pool is None:
            return [self._decode_caught(*item) for item in jobs]
        pool = lane.pool
        # Every member must have a thread of its own: the batch waits for all of them.
        lane.batcher.begin(len(jobs))

        def member(job: Job, audio: np.ndarray, context: np.ndarray | None) -> DecodeOutput | DecodeError:
            try:
                return self._decode_caught(job, audio, context)
            finally:
                lane.batcher.leave()

        futures = [pool.submit(member, *item) for item in jobs]
        return [f.result() for f in futures]

    def _decode_caught(
        self, job: Job, audio: np.ndarray, context: np.ndarray | None = None
    ) -> DecodeOutput | DecodeError:
        try:
            return self.decode_one(job, audio, context)
        except DecodeError as exc:
            return exc

    def _output(
        self, job: Job, segments: list[Any], language: str | None, audio_s: float, context_s: float, decode_ms: float
    ) -> DecodeOutput:
        text, kept = drop_runaway_segments(segments, self.settings)
        context = job.context_text.strip() if context_s else ""
        if context:
            text = strip_context(text, context)
        text = cut_loop(text)
        words = None
        if job.kind != "interim" and job.word_timestamps:
            words = [
                word_json(w, job.t0, context_s)
                for w in first_words(
                    drop_context_words([w for s in kept for w in (s.words or [])], context), len(text.split())
                )
            ]
        cues: list[dict[str, Any]] | None = None
        if job.kind == BATCH:
            cues = [
                {
                    "start": round(job.t0 + max(0.0, s.start), 3),
                    "end": round(job.t0 + min(s.end, audio_s), 3),
                    "text": s.text.strip(),
                    "words": [word_json(w, job.t0) for w in s.words or []],
                }
                for s in kept
                if s.text.strip()
            ]
        logprobs = [s.avg_logprob for s in kept]
        return DecodeOutput(
            text=text,
            language=language,
            words=words,
            no_speech=not text,
            audio_s=audio_s,
            decode_ms=decode_ms,
            confidence=round(math.exp(sum(logprobs) / len(logprobs)), 4) if logprobs and text else 0.0,
            segments=cues,
        )


def word_json(word: Any, t0: float, context_s: float = 0.0) -> dict[str, Any]:
    """A faster-whisper word in session (or file) time: the clip began `context_s` before its
    own audio, which began at `t0`."""
    return {
        "word": word.word,
        "start": round(t0 + max(0.0, word.start - context_s), 3),
        "end": round(t0 + max(0.0, word.end - context_s), 3),
        "prob": round(float(word.probability), 3),
    }


def cpu_threads(settings: Settings) -> int:
    """CTranslate2 threads per lane: CPU_THREADS, or for 0 half the cores this process may run on
    (a lane each), at most 4. CTranslate2's own default is 4 whatever the machine: on 2 cores
    (measured with tiny.en) two lanes of 4 threads decode a final 15-25% slower than two of 1,
    and a lane of 2 threads is no faster than one of 1 (`benchmarks/README.md`)."""
    return settings.CPU_THREADS or threads_per_lane(usable_cores(), len(KINDS))


def at_nice(nice: int, build: Callable[[], T]) -> T:
    """`build()` run in a thread of its own at `nice` (Linux nice is per thread, and threads
    inherit it from the thread that starts them); at the current priority where that is refused."""
    out: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            tid = threading.get_native_id()
            try:
                os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
            except OSError as exc:
                logger.warning("cannot lower the background lane's priority (%s); it runs at the final lane's", exc)
            out.append(build())
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="load-background-lane")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return out[0]


@dataclass
class Lane:
    """What decodes one kind of job: a WhisperModel view, its batcher, its threads."""

    model: Any
    batcher: Any
    pool: ThreadPoolExecutor | None


def forced_prefix(job: Job, with_context: bool) -> str:
    """What the decoder is made to say first: the context's text, then the job's own prefix (an
    interim's stable text, or a final's when it keeps it)."""
    parts = [job.context_text.strip() if with_context else "", job.prefix.strip()]
    return " ".join(p for p in parts if p)
