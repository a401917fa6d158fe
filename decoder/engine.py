"""The faster-whisper engine: one model per process, decode calls made off the event loop."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from common.errors import DecodeError, DeviceMemoryError, ModelLoadError
from common.messages import Job, JobKind
from common.settings import DecoderSettings
from decoder import devices, doubling, lanes, models, profiles
from decoder.batching import WINDOW_FRAMES, BatchingModel, window_frames
from decoder.devices import Placement
from decoder.output import DecodeOutput, decoded
from decoder.scheduler import Lane, lane_of
from decoder.text import echoes, stops_short, word_count
from decoder.voice import SpeakerVoices, VoiceEncoder, load_voice

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0  # how often a slow model load says it is still going

T = TypeVar("T")


class Engine:
    def __init__(
        self,
        settings: DecoderSettings,
        resolve: Callable[[DecoderSettings], tuple[Placement, str]] = devices.resolve,
    ) -> None:
        """Where the model will run is decided here (DeviceError when it cannot be had)."""
        self.settings = settings
        self.place, self.compute_type = resolve(settings)
        self.model_name = settings.MODEL_NAME  # what is served, once loaded (see decoder/models.py)
        self.model: Any = None  # the final lane's WhisperModel (its .model is that lane's batcher)
        self.batcher: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._lanes: dict[Lane, LaneModel] = {}
        self.voice: VoiceEncoder | None = None  # the speaker encoder, when its weights are here
        self._voices = SpeakerVoices(None)

    @property
    def device(self) -> str:
        return self.place.device

    @property
    def device_index(self) -> int:
        return self.place.index

    def load(self, factory: Any = None) -> None:
        """Load the model (downloading a size name on first use), logging progress while it
        takes, and prove it works with a warm-up decode per lane. With DEVICE=auto a GPU that
        cannot be used (no cuBLAS, a CUDA error) gives way to the CPU, with one warning."""
        if factory is None:
            from faster_whisper import WhisperModel

            factory = WhisperModel
        started = time.monotonic()
        loaded = threading.Event()

        def progress() -> None:
            while not loaded.wait(PROGRESS_EVERY_S):
                logger.info("still loading model %s (%.0fs)", self.model_name, time.monotonic() - started)

        ticker = threading.Thread(target=progress, name="load-progress", daemon=True)
        ticker.start()
        try:
            try:
                choice = models.resolve(self.settings.MODEL_NAME, self.settings.is_set("MODEL_NAME"))
            except ModelLoadError:
                raise
            except Exception as exc:  # any resolver failure means this process cannot serve
                raise ModelLoadError("cannot load model %r: %s" % (self.model_name, exc)) from exc
            self.model_name = choice.name
            try:
                whispers = self._load(factory, choice.path)
            except ModelLoadError as exc:
                # A GPU that is full is not a GPU that cannot be used: its decoder is reported
                # and not restarted (stt up), rather than made a slow CPU decoder beside the others.
                if self.place.device != "cuda" or self.settings.DEVICE != "auto" or isinstance(exc, DeviceMemoryError):
                    raise
                logger.warning("%s; DEVICE=auto: serving on the CPU instead", exc)
                self.place = Placement("cpu", 0)
                self.compute_type = devices.compute_type(self.settings.COMPUTE_TYPE, "cpu", cpu_compute_types())
                whispers = self._load(factory, choice.path)
        finally:
            loaded.set()
            ticker.join()
        logger.info("model %s loaded and warmed up in %.1fs", self.model_name, time.monotonic() - started)
        self.voice = load_voice(self.settings.SPEAKER_MODEL)
        self._voices = SpeakerVoices(self.voice)
        sot = whispers[Lane.FINAL].hf_tokenizer.token_to_id("<|startoftranscript|>")
        for lane in Lane:
            # A shallow copy per lane: the same tokenizer and feature extractor, its own batcher
            # (a batch is gathered per lane) and its own decode threads.
            whisper = copy.copy(whispers[lane])
            whisper.model = BatchingModel(whispers[lane].model, sot, pad=self.device == "cuda")
            pool = ThreadPoolExecutor(max_workers=self.settings.DECODE_BATCH, thread_name_prefix="decode-" + lane)
            self._lanes[lane] = LaneModel(whisper, whisper.model, pool)
        final = self._lanes[Lane.FINAL]
        self.model, self.batcher, self._pool = final.model, final.batcher, final.pool

    def _load(self, factory: Any, path: str) -> dict[str, Any]:
        logger.info(
            "loading model %s on %s:%d (%s)%s",
            self.model_name,
            self.device,
            self.device_index,
            self.compute_type,
            "; " + devices.cpu_summary() if self.device == "cpu" else "",
        )
        return lanes.proven(
            lambda: lanes.load_lanes(factory, path, self.settings, self.place, self.compute_type),
            self.place,
            self.model_name,
        )

    @property
    def multilingual(self) -> bool:
        """Whether the loaded model hears other languages than English."""
        return bool(self.model is not None and self.model.model.is_multilingual)

    def _tokens(self, text: str) -> list[int]:
        if not text.strip():
            return []
        return list(self.model.hf_tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids)

    def options(self, job: Job, audio_s: float, with_context: bool = False, timestamps: bool = False) -> dict[str, Any]:
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
        return profiles.options_for(job, self.settings, budget, previous or None, prefix, timestamps)

    def decode_one(
        self, job: Job, audio: np.ndarray, context: np.ndarray | None = None, after: np.ndarray | None = None
    ) -> DecodeOutput:
        """Decode one job, after `context` (the previous utterance's audio, whose text is
        job.context_text) when given. Runs in a decode thread; raises DecodeError on any model
        failure.

        What came before helps the model hear continuous speech, and sometimes leads it astray:
        after a forced text or a prompt that ends a sentence it may end the transcript at the
        new audio's first full stop, whatever follows; and when the new audio is short, unclear
        or no speech at all, it says again what it was given (the context, as it hears it this
        time, or the prompt's last words). A final whose text echoes what came before is decoded
        again with less of it: alone after its context, then without its prompt too. One that
        stops short of its audio (decoder/text.py) is decoded again alone, without its prompt,
        with timestamps; the one with more words stands. A final is never worse off than a
        decode of its audio alone. A final that says its text twice is decoded again with
        `after` (the utterance's audio after the job's range), or keeps one copy
        (decoder/doubling.py)."""
        if job.kind == JobKind.INTERIM:
            return self._decode(job, audio, None)
        output = self._decode_final(job, audio, context)
        if job.kind != JobKind.BATCH:

            def again() -> DecodeOutput | None:
                if after is None or not len(after):
                    return None
                return self._decode(job, np.concatenate([audio, after]), None)

            output = doubling.settle(output, again)
        return output

    def _decode_final(self, job: Job, audio: np.ndarray, context: np.ndarray | None) -> DecodeOutput:
        total_ms = 0.0
        output: DecodeOutput | None = None
        if context is not None and len(context) and job.context_text.strip():
            output = self._decode(job, audio, context)
            total_ms += output.decode_ms
            if output.no_speech or echoes(output.text, job.context_text):
                output = None
        if output is None:
            output = self._decode(job, audio, None)
            total_ms += output.decode_ms
            if job.prompt and echoes(output.text, job.prompt):
                output = self._decode(dataclasses.replace(job, prompt=""), audio, None)
                total_ms += output.decode_ms
        if job.kind != JobKind.BATCH and not output.no_speech and stops_short(output.text, output.audio_s):
            # With timestamps the model says where the next segment starts instead of ending
            # the transcript at a full stop (a file part is decoded with them already).
            timed = self._decode(dataclasses.replace(job, prompt=""), audio, None, timestamps=True)
            total_ms += timed.decode_ms
            logger.info(
                "job %s: %d words for %.1fs of audio; %d decoded alone with timestamps",
                job.id,
                word_count(output.text),
                output.audio_s,
                word_count(timed.text),
            )
            if word_count(timed.text) > word_count(output.text):
                output = timed
        output.decode_ms = total_ms
        return output

    @contextlib.contextmanager
    def windowed(self, job: Job, clip_s: float) -> Iterator[LaneModel]:
        """The lane of the job's kind, its encoder window cut for a clip of `clip_s` seconds
        (context included) in this thread while the block runs."""
        pad = self.settings.INTERIM_WINDOW_PAD_S if job.kind == JobKind.INTERIM else self.settings.FINAL_WINDOW_PAD_S
        lane = self.lane(job.kind)
        lane.batcher.window(window_frames(clip_s, pad, self.settings.WINDOW_MIN_S), job.word_timestamps)
        try:
            yield lane
        finally:
            # The window is this job's: a later transcribe in this thread gets the whole again.
            lane.batcher.window(WINDOW_FRAMES)

    def lane(self, kind: JobKind) -> LaneModel:
        return self._lanes.get(lane_of(kind)) or LaneModel(self.model, self.batcher, self._pool)

    def _decode(
        self, job: Job, audio: np.ndarray, context: np.ndarray | None, timestamps: bool = False
    ) -> DecodeOutput:
        samples = np.concatenate([context, audio]) if context is not None else audio
        context_s = (len(samples) - len(audio)) / 16000.0
        audio_s = len(audio) / 16000.0
        started = time.perf_counter()
        options = self.options(job, audio_s, context is not None, timestamps)
        try:
            with self.windowed(job, len(samples) / 16000.0) as lane:
                segments, info = lane.model.transcribe(samples, **options)
                if not options["without_timestamps"]:
                    # A file part is decoded with timestamps (its segments are its subtitle
                    # cues), and a final that stopped short. A segment that starts in the
                    # padding after the audio is not speech.
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
        return decoded(
            job,
            kept,
            info.language,
            audio_s,
            context_s,
            (time.perf_counter() - started) * 1000.0,
            self.settings,
        )

    def decode_many(
        self,
        jobs: list[tuple[Job, np.ndarray]],
        contexts: list[np.ndarray | None] | None = None,
        afters: list[np.ndarray | None] | None = None,
        on_each: Callable[[int, DecodeOutput | DecodeError], None] | None = None,
    ) -> list[DecodeOutput | DecodeError]:
        """Decode jobs of one kind, up to DECODE_BATCH at a time together (see
        decoder/batching.py); each job fails alone. `contexts[i]` is job i's context audio,
        `afters[i]` the audio after its range (for a final said twice). `on_each(i, output)` is
        called (from a decode thread) as each job is done, before the others of its batch: one
        that falls back through every temperature must not hold the rest's results."""
        size = self.settings.DECODE_BATCH
        items = [
            (job, audio, contexts[i] if contexts else None, afters[i] if afters else None)
            for i, (job, audio) in enumerate(jobs)
        ]
        outputs: list[DecodeOutput | DecodeError] = []
        for i in range(0, len(items), size):
            outputs += self._decode_together(items[i : i + size], i, on_each)
        return outputs

    def _decode_together(
        self,
        jobs: list[tuple[Job, np.ndarray, np.ndarray | None, np.ndarray | None]],
        first: int = 0,
        on_each: Callable[[int, DecodeOutput | DecodeError], None] | None = None,
    ) -> list[DecodeOutput | DecodeError]:
        lane = self.lane(jobs[0][0].kind)

        def done(i: int, output: DecodeOutput | DecodeError) -> DecodeOutput | DecodeError:
            if on_each is not None:
                on_each(first + i, output)
            return output

        if len(jobs) == 1 or lane.pool is None:
            outputs = []
            for i, item in enumerate(jobs):
                beside = self._voices.beside(item[0], item[1])
                outputs.append(done(i, self._voices.add(item[0], item[1], self._decode_caught(*item), beside)))
            return outputs
        pool = lane.pool
        # Every member must have a thread of its own: the batch waits for all of them.
        lane.batcher.begin(len(jobs))

        def member(
            i: int, job: Job, audio: np.ndarray, context: np.ndarray | None, after: np.ndarray | None
        ) -> DecodeOutput | DecodeError:
            beside = self._voices.beside(job, audio)
            try:
                output = self._decode_caught(job, audio, context, after)
            finally:
                lane.batcher.leave()
            return done(i, self._voices.add(job, audio, output, beside))

        futures = [pool.submit(member, i, *item) for i, item in enumerate(jobs)]
        return [f.result() for f in futures]

    def _decode_caught(
        self, job: Job, audio: np.ndarray, context: np.ndarray | None = None, after: np.ndarray | None = None
    ) -> DecodeOutput | DecodeError:
        try:
            return self.decode_one(job, audio, context, after)
        except DecodeError as exc:
            return exc


@dataclass
class LaneModel:
    """What decodes one lane's jobs: a WhisperModel view, its batcher, its threads."""

    model: Any
    batcher: Any
    pool: ThreadPoolExecutor | None


def cpu_compute_types() -> set[str]:
    import ctranslate2

    return set(ctranslate2.get_supported_compute_types("cpu"))


def forced_prefix(job: Job, with_context: bool) -> str:
    """What the decoder is made to say first: the context's text, then the job's own prefix (an
    interim's stable text, or a final's when it keeps it)."""
    parts = [job.context_text.strip() if with_context else "", job.prefix.strip()]
    return " ".join(p for p in parts if p)
