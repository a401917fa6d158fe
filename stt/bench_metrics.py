"""What `stt bench` reads from the gateway's /metrics around each load: the speculative finals'
outcomes and the decoder time spent on results that were discarded."""

from __future__ import annotations

import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

WANTED = ("stt_speculative_finals", "stt_speculative_wasted_seconds", "stt_gateway_decoded_seconds")


def metrics_url(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "/metrics", "", ""))


def scrape(ws_url: str) -> dict[str, float] | None:
    """The counters this report needs, keyed `name` or `name{label}`; None when the gateway's
    /metrics cannot be read (behind a proxy that does not route it, say)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(metrics_url(ws_url), timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in WANTED:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            label = next(iter(sample.labels.values()), "")
            out["%s{%s}" % (family.name, label) if label else family.name] = sample.value
    return out


def speculation(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, Any] | None:
    """Speculative finals between two scrapes: how many were queued, used, cancelled, and the
    decoder time discarded as a share of all the decoder time this gateway's results cost."""
    if before is None or after is None:
        return None

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    outcomes = ("queued", "ready", "awaited", "cancelled", "invalid", "discarded")
    counts = {o: int(delta("stt_speculative_finals{%s}" % o)) for o in outcomes}
    decoded = sum(delta(k) for k in after if k.startswith("stt_gateway_decoded_seconds{"))
    wasted = delta("stt_speculative_wasted_seconds")
    return {
        **counts,
        "used": counts["ready"] + counts["awaited"],
        "wasted_s": round(wasted, 2),
        "decoded_s": round(decoded, 2),
        "wasted_share": round(wasted / decoded, 3) if decoded > 0 else None,
    }
