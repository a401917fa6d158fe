"""Decode profiles: how an interim and a final are decoded.

Interim: greedy, one temperature, no timestamps, the gateway's stable prefix forced, a token
budget bound to the audio length. Final: beam search with temperature fallback, the session's
last final text as prompt, word timestamps when asked. VAD already ran in the gateway, so the
model's own VAD stays off. Tests decode directly with these same options, so what the service
returns is comparable with a plain `WhisperModel.transcribe`.
"""

from __future__ import annotations

from typing import Any

from common.messages import Job
from common.settings import Settings

FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Whisper's decoder context: prompt and generated tokens together.
MAX_CONTEXT = 448
# Previous-text tokens kept as the prompt: enough context, and a common length (jobs whose
# <|startoftranscript|> sits at the same index can share one batched generate).
PROMPT_TOKENS = 48
# The decode length limit (prompt + new tokens) is rounded up to a multiple of this, so jobs of
# similar length share it and can be batched (CTranslate2 takes one max_length per call).
LENGTH_QUANTUM = 16


def token_budget(audio_s: float, settings: Settings, prompt_tokens: int = 0) -> int:
    """New tokens a window may produce: speech is at most a few tokens a second, so a random
    or hallucinating model stops here instead of running to the context end."""
    wanted = int(settings.TOKEN_BUDGET_BASE + settings.TOKEN_BUDGET_PER_S * audio_s)
    limit = -(-(prompt_tokens + wanted) // LENGTH_QUANTUM) * LENGTH_QUANTUM
    return max(1, min(limit, MAX_CONTEXT) - prompt_tokens)


def options_for(job: Job, settings: Settings, budget: int, prompt: list[int] | None = None) -> dict[str, Any]:
    """Keyword arguments of `WhisperModel.transcribe` for this job."""
    common: dict[str, Any] = {
        "language": job.lang,
        "task": job.task,
        "without_timestamps": True,
        "condition_on_previous_text": False,
        "vad_filter": False,
        "initial_prompt": prompt,
        "max_new_tokens": budget,
        "no_speech_threshold": settings.NO_SPEECH_THRESHOLD,
        "log_prob_threshold": settings.LOG_PROB_THRESHOLD,
    }
    if job.kind == "interim":
        common.update(
            beam_size=1,
            best_of=1,
            temperature=0.0,
            prefix=job.prefix or None,
            word_timestamps=False,
            compression_ratio_threshold=None,
        )
    else:
        common.update(
            beam_size=settings.FINAL_BEAM,
            best_of=5,
            temperature=list(FALLBACK_TEMPERATURES),
            prefix=None,
            word_timestamps=job.word_timestamps,
            compression_ratio_threshold=settings.COMPRESSION_RATIO_THRESHOLD,
        )
    return common
