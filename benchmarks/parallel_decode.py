"""What a burst of would-be finals costs on this machine's cores: the turn benchmark's longest
complete sentences decoded as the service decodes a would-be final, in one process alone, then
in `--processes` processes at once (`stt up` runs one decoder per core, each decoding one final
at a time on one thread).

    python benchmarks/parallel_decode.py [--processes 2] [--min-s 9] [--rounds 6] [--compute-type int8]
                                         [--label NAME]

Six synchronized clients of `benchmarks/turns.py` end their sentences at the same moment, and
two CPU decoders take the six would-be finals two at a time: the last pair's end is about three
parallel decodes after the speech. This prints the mean time of one decode alone and among
`--processes` at once, so the burst's 95th percentile can be read against what the cores
themselves allow. Writes benchmarks/results/parallel-decode[-NAME].json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def long_sentences(min_s: float) -> list[Any]:
    """The complete sentences of the turn benchmark's audio that last at least `min_s`."""
    from benchmarks.turns import talk

    audio, spans = talk(8)
    return [
        audio[int(s["start"] * 16000) : int(s["end"] * 16000)]
        for s in spans
        if s["kind"] == "complete" and s["end"] - s["start"] >= min_s
    ]


def decode_times(clips: list[Any], rounds: int, compute_type: str, start: Any = None) -> list[float]:
    """ms per decode of each clip, `rounds` times over, after one warm-up round; the timed
    rounds begin when every process of the run is ready (`start`, a barrier)."""
    from common.messages import Job, JobKind
    from common.settings import Settings
    from decoder.engine import Engine

    model = os.environ.get("MODEL_NAME", "tiny.en")
    engine = Engine(Settings.from_env({}, MODEL_NAME=model, DEVICE="cpu", COMPUTE_TYPE=compute_type, CPU_THREADS=1))
    engine.load()
    jobs = [
        (
            Job(
                id="b%d" % i,
                kind=JobKind.SPECULATIVE,
                session="s",
                gateway="g",
                utt=i,
                audio_key="",
                audio_end=2 * len(c),
                lang="en",
            ),
            c,
        )
        for i, c in enumerate(clips)
    ]
    for job, clip in jobs:
        engine.decode_one(job, clip)
    if start is not None:
        start.wait()
    times = []
    for _ in range(rounds):
        for job, clip in jobs:
            t0 = time.perf_counter()
            engine.decode_one(job, clip)
            times.append((time.perf_counter() - t0) * 1000)
    return times


def _worker(clips: list[Any], rounds: int, compute_type: str, start: Any, out: Any) -> None:
    out.put(decode_times(clips, rounds, compute_type, start))


def main(argv: list[str] | None = None) -> int:
    from decoder.devices import cpu_summary

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--min-s", type=float, default=9.0, help="the shortest sentence taken, in seconds")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--compute-type", default="int8", help="CTranslate2's (the service's COMPUTE_TYPE)")
    p.add_argument("--burst", type=int, default=6, help="would-be finals at once (the clients)")
    p.add_argument("--label", default="")
    args = p.parse_args(argv)
    clips = long_sentences(args.min_s)
    print(
        "%d sentences of at least %.1f s (%s s)"
        % (len(clips), args.min_s, ", ".join("%.1f" % (len(c) / 16000) for c in clips))
    )
    print("decoding them alone, %d rounds ..." % args.rounds, flush=True)
    alone = statistics.mean(decode_times(clips, args.rounds, args.compute_type))
    print("  alone: %.0f ms per decode" % alone)
    print("decoding them in %d processes at once ..." % args.processes, flush=True)
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(args.processes), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(clips, args.rounds, args.compute_type, start, out))
        for _ in range(args.processes)
    ]
    for proc in procs:
        proc.start()
    together = [t for _ in procs for t in out.get(timeout=600)]
    for proc in procs:
        proc.join(60)
    parallel = statistics.mean(together)
    print("  %d at once: %.0f ms per decode (%+.0f%%)" % (args.processes, parallel, 100 * (parallel / alone - 1)))
    turns = -(-args.burst // args.processes)
    print(
        "  %d at once on %d decoders: the last ends ~%.0f ms after they are queued (%d decodes in turn)"
        % (args.burst, args.processes, turns * parallel, turns)
    )
    row = {
        "sentences_s": [round(len(c) / 16000, 2) for c in clips],
        "processes": args.processes,
        "compute_type": args.compute_type,
        "alone_ms": round(alone, 1),
        "parallel_ms": round(parallel, 1),
        "burst": args.burst,
        "burst_last_ms": round(turns * parallel, 1),
        "when": time.strftime("%Y-%m-%d"),
        "machine": cpu_summary(),
    }
    out_path = ROOT / "benchmarks" / "results" / ("parallel-decode%s.json" % ("-" + args.label if args.label else ""))
    out_path.write_text(json.dumps(row, indent=1))
    print("wrote %s" % out_path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
