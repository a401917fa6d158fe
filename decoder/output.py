"""What a decode returns: faster-whisper's segments for a job's clip made into its text, words
and cues, in session (or file) time, and into the Result the decoder publishes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from common.messages import Job, JobKind, Result
from common.settings import DecoderSettings
from decoder.text import cut_loop, drop_context_words, drop_runaway_segments, first_words, strip_context


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
    voice: list[float] | None = None  # the speaker embedding, for a job that asked for it

    def answering(self, job: Job, queue_ms: float, decoder: str) -> Result:
        """The Result this output makes for `job`."""
        return Result.answering(
            job,
            text=self.text,
            language=self.language,
            words=self.words,
            audio_s=round(self.audio_s, 3),
            queue_ms=queue_ms,
            decode_ms=round(self.decode_ms, 1),
            decoder=decoder,
            no_speech=self.no_speech,
            confidence=self.confidence,
            segments=self.segments,
            voice=self.voice,
        )


def decoded(
    job: Job,
    segments: list[Any],
    language: str | None,
    audio_s: float,
    context_s: float,
    decode_ms: float,
    settings: DecoderSettings,
) -> DecodeOutput:
    """A job's output from the segments faster-whisper gave for its clip (`context_s` of context
    first): runaway segments, the context's words and loops taken out; word times and a file
    part's cues in session (or file) time; the text's confidence."""
    text, kept = drop_runaway_segments(segments, settings)
    context = job.context_text.strip() if context_s else ""
    if context:
        text = strip_context(text, context)
    text = cut_loop(text)
    words = None
    if job.kind != JobKind.INTERIM and job.word_timestamps:
        words = [
            word_json(w, job.t0, context_s)
            for w in first_words(
                drop_context_words([w for s in kept for w in (s.words or [])], context), len(text.split())
            )
        ]
    cues: list[dict[str, Any]] | None = None
    if job.kind == JobKind.BATCH:
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
