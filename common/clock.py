"""Time as the service reads it: unix milliseconds as the wire uses them (job `enqueued` and
`deadline`), and the two clocks given to code whose tests decide what time it is (the session
core): `now()` (monotonic seconds: timeouts, latencies) and `wall_ms()` (unix milliseconds)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Clock:
    now: Callable[[], float] = time.monotonic
    wall_ms: Callable[[], int] = now_ms


SYSTEM = Clock()
