"""Wall-clock time as the wire uses it: unix milliseconds (job `enqueued` and `deadline`)."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
