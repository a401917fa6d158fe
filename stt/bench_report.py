"""How `stt bench` shows its results: a line per load, a table, a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def waste(stats: dict[str, Any]) -> str:
    spec = stats.get("speculative")
    if not spec or not spec["queued"]:
        return "off"
    share = spec["wasted_share"]
    return "%d used of %d, %s of decoder time wasted" % (
        spec["used"],
        spec["queued"],
        "-" if share is None else "%.0f%%" % (100 * share),
    )


def share_of(r: dict[str, Any]) -> str:
    spec = r.get("speculative")
    if not spec or not spec["queued"] or spec["wasted_share"] is None:
        return "-"
    return "%.0f%%" % (100 * spec["wasted_share"])


def table(results: list[dict[str, Any]]) -> str:
    head = "%6s %9s %9s %9s %9s %10s %10s %10s %11s %8s %6s %8s %6s %6s" % (
        "N",
        "e2e p50",
        "e2e p95",
        "over-ep",
        "ovh p50",
        "queue p95",
        "decode p50",
        "interim1st",
        "cadence p50",
        "missing",
        "WER",
        "cores/N",
        "int/s",
        "waste",
    )
    rows = [head]
    for r in results:
        rows.append(
            "%6d %9s %9s %9s %9s %10s %10s %10s %11s %8d %5.1f%% %8s %6s %6s"
            % (
                r["streams"],
                r["e2e_final_ms"]["p50"],
                r["e2e_final_ms"]["p95"],
                r["over_endpoint_ms"]["p50"],
                r["service_overhead_ms"]["p50"],
                r["final_queue_ms"]["p95"],
                r["final_decode_ms"]["p50"],
                r["first_interim_ms"]["p50"],
                r["interim_cadence_ms"]["p50"],
                r["finals_missing"],
                r["wer"],
                r.get("cores_per_stream", "-"),
                r["interims_per_stream_s"],
                share_of(r),
            )
        )
    return "\n".join(rows)


def plot(results: list[dict[str, Any]], slo: float, path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ns = [r["streams"] for r in results]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, label in (("p50", "end-of-speech to final p50"), ("p95", "end-of-speech to final p95")):
        ax.plot(ns, [r["e2e_final_ms"][key] for r in results], marker="o", label=label)
    ax.plot(
        ns,
        [r["first_interim_ms"]["p50"] for r in results],
        marker="s",
        linestyle=":",
        label="onset to first interim p50",
    )
    ax.axhline(slo, color="red", linestyle="--", label="SLO (p95)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent real-time streams")
    ax.set_ylabel("ms")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
