"""The decode length limit: enough room for a forced prefix and the speech after it, under both
of CTranslate2's bounds, on a few shared steps."""

from __future__ import annotations

import pytest

from common.settings import Settings
from decoder.profiles import LENGTH_STEPS, MAX_CONTEXT, token_budget

SETTINGS = Settings.from_env({})


def returned_limit(max_length: int, prompt: int, prefix: int) -> int:
    """What CTranslate2's Whisper generate lets through: forced prefix plus new tokens."""
    before_prefix = prompt - prefix - 1
    return min(max_length // 2, max_length - before_prefix)


@pytest.mark.parametrize(
    ("audio_s", "prompt", "prefix"), [(1.0, 2, 0), (5.0, 52, 0), (3.0, 90, 40), (24.0, 52, 0), (8.0, 140, 85)]
)
def test_the_budget_leaves_room_for_prefix_and_speech(audio_s: float, prompt: int, prefix: int) -> None:
    budget = token_budget(audio_s, SETTINGS, prompt, prefix)
    max_length = prompt + budget
    wanted = int(SETTINGS.TOKEN_BUDGET_BASE + SETTINGS.TOKEN_BUDGET_PER_S * audio_s)
    assert max_length in LENGTH_STEPS
    assert returned_limit(max_length, prompt, prefix) >= prefix + wanted


def test_jobs_of_similar_length_share_a_limit_and_none_passes_the_context() -> None:
    limits = {token_budget(s, SETTINGS, 52) + 52 for s in (2.0, 2.5, 3.0, 3.5)}
    assert len(limits) == 1
    assert token_budget(29.0, SETTINGS, 200, 150) + 200 == MAX_CONTEXT
