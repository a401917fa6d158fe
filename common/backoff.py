"""Exponential backoff with full jitter, for every retry loop (Redis outages, resubscribing,
restarting a child): many processes that lost the same thing do not retry in lockstep."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from `first` up to `cap`, each drawn uniformly from [d/2, d]."""

    def __init__(self, first: float = 0.1, cap: float = 5.0, rng: random.Random | None = None) -> None:
        self.first, self.cap = first, cap
        self.attempts = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt."""
        ceiling = min(self.cap, self.first * 2**self.attempts)
        self.attempts += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """The thing came back: the next failure starts from `first` again."""
        self.attempts = 0

    @property
    def failing(self) -> bool:
        return self.attempts > 0
