"""Deepgram Flux's turn thresholds, from its query or a `Configure` message, as its ranges say."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.options import BadInput, excerpt

ENCODINGS = ("linear16", "mulaw")
EOT = (0.5, 1.0)
EAGER = (0.3, 0.9)
TIMEOUT_MS = (500, 60000)


@dataclass(frozen=True)
class Thresholds:
    eot: float = 0.7
    eager: float | None = None  # unset: no EagerEndOfTurn
    timeout_ms: int = 5000


def _number(raw: Any, name: str, lo: float, hi: float, fatal: bool) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadInput("invalid_" + name, "%s must be a number, not %s" % (name, excerpt(raw)), fatal=fatal) from None
    if isinstance(raw, bool) or not lo <= value <= hi:
        raise BadInput("invalid_" + name, "%s must be %g-%g, not %s" % (name, lo, hi, excerpt(raw)), fatal=fatal)
    return value


def parse_thresholds(source: Mapping[str, Any], current: Thresholds, fatal: bool) -> Thresholds:
    """`eot_threshold`, `eager_eot_threshold`, `eot_timeout_ms` from a query (strings) or a
    Configure's `thresholds` (numbers); those absent stay as in `current`. BadInput, naming the
    field, for one out of its range or an eager threshold above the end one."""
    eot, eager, timeout = current.eot, current.eager, current.timeout_ms
    if source.get("eot_threshold") is not None:
        eot = _number(source["eot_threshold"], "eot_threshold", *EOT, fatal=fatal)
    if source.get("eager_eot_threshold") is not None:
        eager = _number(source["eager_eot_threshold"], "eager_eot_threshold", *EAGER, fatal=fatal)
    if source.get("eot_timeout_ms") is not None:
        timeout = int(_number(source["eot_timeout_ms"], "eot_timeout_ms", *TIMEOUT_MS, fatal=fatal))
    if eager is not None and eager > eot:
        raise BadInput(
            "invalid_eager_eot_threshold",
            "eager_eot_threshold (%g) must not exceed eot_threshold (%g)" % (eager, eot),
            fatal=fatal,
        )
    return Thresholds(eot, eager, timeout)
