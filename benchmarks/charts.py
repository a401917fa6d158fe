"""The benchmark pages' charts, drawn from the results the benchmarks wrote (SVG, committed under
docs/benchmarks/img/):

    python benchmarks/charts.py [--only NAME,...]

- latency: end of speech to final, p50 and p95, against concurrent streams (`stt bench`'s
  results: one and two CPU decoders, speculation off and on);
- wer: streamed against direct WER per set and voice (benchmarks/accuracy.py);
- turns: EndOfTurn latency with the end-of-turn model and with silence alone, at 1 and 6
  streams (benchmarks/turns.py);
- failover: each final's latency against when it came, around the moment Redis's primary was
  killed (tests/deploy/test_docker_failover.py; its timeline is copied into benchmarks/results/).

benchmarks/accuracy.py and benchmarks/turns.py call `render` for their own chart when they
finish (`stt bench` draws its own PNG beside its results; the latency chart here is drawn from
them); a chart whose results are missing is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
IMG = ROOT / "docs" / "benchmarks" / "img"

# The stt bench runs the latency chart compares: (results file, label).
LATENCY_RUNS = (
    ("bench-tiny.en-cpu.json", "one decoder (2026-11-24)"),
    ("bench-spec-off.json", "two decoders, SPECULATE_MS=0 (2026-12-02)"),
    ("bench-spec-on2.json", "two decoders, speculation: the default (2026-12-02)"),
)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "stt-cluster", "font.size": 10, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _save(fig: Any, name: str) -> Path:
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / ("%s.svg" % name)
    fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return path


def _load(name: str) -> Any:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def latency() -> Path | None:
    runs = [(label, _load(name)) for name, label in LATENCY_RUNS]
    runs = [(label, data) for label, data in runs if data]
    if not runs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, data in runs:
        rows = sorted(data["results"], key=lambda r: r["streams"])
        streams = [r["streams"] for r in rows]
        (line,) = ax.plot(streams, [r["e2e_final_ms"]["p95"] for r in rows], marker="o", label="%s, p95" % label)
        ax.plot(streams, [r["e2e_final_ms"]["p50"] for r in rows], marker=".", linestyle="--", color=line.get_color())
    ax.axhline(1500, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("real-time streams")
    ax.set_ylabel("end of speech → final (ms); dashed: p50")
    ax.set_title("stt bench, tiny.en on 2 CPU cores")
    ax.legend(fontsize=8)
    return _save(fig, "latency")


def wer() -> Path | None:
    data = _load("accuracy-recorded.json")
    if not data:
        return None
    plt = _plt()
    groups: list[tuple[str, dict[str, Any]]] = [("recorded (57 speakers)", data["recorded"])]
    # The espeak-ng set carries jfk.flac too, a recording: named as it is.
    groups += [
        (voice if "recorded" in voice else "espeak-ng %s" % voice, v)
        for voice, v in sorted(data["espeak"]["by_voice"].items())
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(groups))
    ax.bar([x - 0.2 for x in xs], [g["wer_streamed"] for _, g in groups], width=0.4, label="streamed (stt up)")
    ax.bar([x + 0.2 for x in xs], [g["wer_direct"] for _, g in groups], width=0.4, label="direct decode")
    ax.set_xticks(list(xs), [name for name, _ in groups], rotation=30, ha="right")
    ax.set_ylabel("WER (%)")
    ax.set_title("WER by set, tiny.en (%s)" % data["when"][:10])
    ax.legend(fontsize=8)
    return _save(fig, "wer")


def turns() -> Path | None:
    data = _load("turns.json")
    if not data:
        return None
    plt = _plt()
    rows = data["rows"]
    cases = [(r["streams"], r["arrangement"]) for r in rows if r["setting"] == "model"]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(cases))
    for offset, setting, color, name in (
        (-0.2, "model", "C0", "end-of-turn model"),
        (0.2, "silence", "C1", "silence alone"),
    ):
        mine = {(r["streams"], r["arrangement"]): r for r in rows if r["setting"] == setting}
        got = [mine.get(c) for c in cases]
        # p95 light behind, p50 solid in front.
        for key, alpha, label in (("eot_p95_ms", 0.35, None), ("eot_p50_ms", 1.0, "%s (p50 solid, p95 light)" % name)):
            heights = [r[key] if r else 0 for r in got]
            ax.bar([x + offset for x in xs], heights, width=0.4, alpha=alpha, color=color, label=label)
    ax.set_xticks(list(xs), ["%d stream%s, %s" % (n, "s" if n > 1 else "", how) for n, how in cases])
    ax.axhline(300, color="grey", linewidth=0.8, linestyle=":")
    ax.set_ylabel("end of speech → EndOfTurn (ms)")
    ax.set_title("Deepgram Flux sessions, tiny.en on 2 CPU cores (%s)" % data["when"])
    ax.legend(fontsize=8)
    return _save(fig, "turns")


def failover() -> Path | None:
    data = _load("docker-failover.json")
    if not data or "timeline" not in data:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    points = data["timeline"]
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=18)
    ax.axvline(0, color="C3", linewidth=1)
    ax.text(0.1, max(p[1] for p in points), "primary killed", color="C3", va="top", fontsize=8)
    ax.axvspan(0, data["failover_gap_s"], color="C3", alpha=0.08)
    ax.set_xlabel("seconds from the kill of Redis's primary")
    ax.set_ylabel("end of speech → final (s)")
    ax.set_title("Sentinel failover under four live sessions")
    return _save(fig, "failover")


CHARTS: dict[str, Callable[[], Path | None]] = {"latency": latency, "wer": wer, "turns": turns, "failover": failover}


def render(*names: str) -> None:
    """Draw the named charts (all when none is named), saying what each became."""
    for name in names or tuple(CHARTS):
        try:
            path = CHARTS[name]()
        except ImportError:
            print("chart %s: skipped, matplotlib is not installed (pip install -e '.[bench]')" % name)
            continue
        if path is None:
            print("chart %s: skipped, its results are not in benchmarks/results/" % name)
        else:
            print("chart %s: %s" % (name, path.relative_to(ROOT)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated: " + ", ".join(CHARTS))
    args = p.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in CHARTS]
    if unknown:
        p.error("unknown chart %s" % ", ".join(unknown))
    render(*names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
