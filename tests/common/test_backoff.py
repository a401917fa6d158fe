"""One backoff for every retry loop: doubling, capped, jittered, reset when things work."""

from __future__ import annotations

import random

from common.backoff import Backoff


def test_delays_double_up_to_the_cap_with_jitter_below_each_step() -> None:
    backoff = Backoff(first=0.1, cap=1.0, rng=random.Random(7))
    delays = [backoff.next() for _ in range(8)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings))
    assert len(set(delays)) == len(delays)  # jittered: no two processes retry in lockstep
    assert backoff.failing
    backoff.reset()
    assert not backoff.failing and backoff.next() <= 0.1
