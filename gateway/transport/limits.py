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
from dataclasses import dataclass

from common.settings import GatewaySettings

FINALIZE_BURST = 5.0
FINALIZE_RATE = 2.0  # per second: a person ends utterances far less often
# A client held back (for sending too fast) longer than this in all is refused: it is not streaming
# in real time, and it is taking time from the others.
MAX_HELD_S = 10.0


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


@dataclass
class Budgets:
    """One connection's budgets, and how long it was held back in all."""

    audio: TokenBucket
    finalize: TokenBucket
    held_s: float = 0.0

    @classmethod
    def of(cls, settings: GatewaySettings) -> Budgets:
        return cls(
            TokenBucket(settings.AUDIO_BURST_S, settings.AUDIO_RATE_MAX), TokenBucket(FINALIZE_BURST, FINALIZE_RATE)
        )

    def over(self, wait: float, what: str, settings: GatewaySettings) -> str:
        """Hold the client back `wait` more seconds: "" if it may be, else why it is refused
        (held back more than MAX_HELD_S in all: it is not a real-time stream)."""
        if self.held_s + wait <= MAX_HELD_S:
            self.held_s += wait
            return ""
        limit = (
            "%.1fx real time beyond a %.0f s burst" % (settings.AUDIO_RATE_MAX, settings.AUDIO_BURST_S)
            if what == "audio"
            else "%.0f finalize a second beyond a burst of %.0f" % (FINALIZE_RATE, FINALIZE_BURST)
        )
        return "%s arrives faster than this service takes it (%s); stream in real time" % (what, limit)
