"""How fast one session may feed the cluster.

Token buckets: audio in seconds (up to AUDIO_BURST_S ahead of real time, refilled at
AUDIO_RATE_MAX seconds per second) and `finalize` ops (a burst of FINALIZE_BURST, then
FINALIZE_RATE per second: each one ends an utterance, and every utterance costs a decode). A
session that spends more waits before its next message is read: the gateway stops reading its
socket, TCP slows the client down, and no other session pays for its decodes. (Outstanding
finals are capped in the session itself.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

FINALIZE_BURST = 5.0
FINALIZE_RATE = 2.0  # per second: a person ends utterances far less often


class TokenBucket:
    def __init__(self, capacity: float, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.rate = capacity, rate
        self._clock = clock
        self._tokens = capacity
        self._at = clock()

    def spend(self, amount: float) -> float:
        """Take `amount`; how long to wait before taking more (0: at once)."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
