"""Decode profiles: how an interim and a final are decoded.

Interim: greedy, one temperature, no timestamps, the gateway's stable prefix forced, a token
budget bound to the audio length. Final: beam search with temperature fallback, word timestamps
when asked, and the previous utterance's text forced when its audio comes first (the engine
decides; see decoder/engine.py). Both take the session's recent finals as prompt. VAD already
ran in the gateway, so the model's own VAD stays off. Tests decode directly with these same
options, so what the service returns is comparable with a plain `WhisperModel.transcribe`.
"""

from __future__ import annotations

from typing import Any

from common.messages import Job, JobKind
from common.settings import DecoderSettings

FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Whisper's decoder context: prompt and generated tokens together.
MAX_CONTEXT = 448
# Previous-text tokens kept as the prompt: enough context, and a common length (jobs whose
# <|startoftranscript|> sits at the same index can share one batched generate).
PROMPT_TOKENS = 48
# Key terms (a session's hotwords) put before that prompt: at most this many tokens.
HOTWORD_TOKENS = 96
# The decode length limit is rounded up to one of these, so jobs of similar length share it and
# can be batched (CTranslate2 takes one max_length per call).
LENGTH_STEPS = (64, 96, 128, 160, 192, 224, 256, 320, 384, 448)


def token_budget(audio_s: float, settings: DecoderSettings, prompt_tokens: int = 0, prefix_tokens: int = 0) -> int:
    """`max_new_tokens` for a window of `audio_s` seconds of new speech: speech is at most a few
    tokens a second, so a random or hallucinating model stops here instead of running to the
    context end.

    faster-whisper passes CTranslate2 max_length = prompt + max_new_tokens, and CTranslate2 lets
    the tokens it returns (the forced prefix, then the new ones) number at most
    min(max_length / 2, max_length - the prompt before the prefix), as Whisper's own sample length
    is half its context. So the limit is sized for the prefix plus the wanted new tokens under
    both bounds; `prompt_tokens` is the whole prompt, `prefix_tokens` its forced prefix."""
    wanted = int(settings.TOKEN_BUDGET_BASE + settings.TOKEN_BUDGET_PER_S * audio_s)
    returned = prefix_tokens + wanted
    before_prefix = max(0, prompt_tokens - prefix_tokens - 1)
    limit = max(2 * returned, before_prefix + returned, prompt_tokens + 1)
    limit = next((step for step in LENGTH_STEPS if step >= limit), MAX_CONTEXT)
    return max(1, min(limit, MAX_CONTEXT) - prompt_tokens)


def options_for(
    job: Job,
    settings: DecoderSettings,
    budget: int,
    prompt: list[int] | None = None,
    prefix: str = "",
    timestamps: bool = False,
) -> dict[str, Any]:
    """Keyword arguments of `WhisperModel.transcribe` for this job; `prefix` is forced;
    `timestamps`: decoded with timestamps (a file part's always are: its segments are its
    subtitle cues)."""
    common: dict[str, Any] = {
        "language": job.lang,
        "task": job.task,
        "without_timestamps": not timestamps and job.kind != JobKind.BATCH,
        "condition_on_previous_text": False,
        "vad_filter": False,
        "initial_prompt": prompt,
        "max_new_tokens": budget,
        "no_speech_threshold": settings.NO_SPEECH_THRESHOLD,
        "log_prob_threshold": settings.LOG_PROB_THRESHOLD,
        "prefix": prefix or None,
    }
    if job.kind == JobKind.INTERIM:
        common.update(
            beam_size=1,
            best_of=1,
            temperature=0.0,
            word_timestamps=False,
            compression_ratio_threshold=None,
        )
    else:
        common.update(
            beam_size=settings.FINAL_BEAM,
            best_of=5,
            temperature=list(FALLBACK_TEMPERATURES),
            word_timestamps=job.word_timestamps,
            compression_ratio_threshold=settings.COMPRESSION_RATIO_THRESHOLD,
        )
    return common
