"""Decode throughput of cross-session batching, per kind: the same jobs one at a time
(DECODE_BATCH=1) and together (DECODE_BATCH=B), on one engine.

    python benchmarks/batching.py --model DIR [--batch 4] [--rounds 3] [--threads 0] [--device cpu]

Jobs are espeak-ng sentences (2-5 s) with prompts of the common length, as a loaded service
sends them. Checks each batched text against its alone text, prints jobs/s and the gain, and
writes benchmarks/results/batching-<device>-b<B>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.messages import Job, JobKind
from common.settings import Settings
from decoder.engine import Engine
from stt.speech import SENTENCES, conversation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU_THREADS (0: CTranslate2's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument(
        "--no-prompt",
        action="store_true",
        help="no previous-text prompt (a random test model then rarely needs temperature fallback)",
    )
    args = parser.parse_args()
    settings = Settings.from_env(
        {},
        MODEL_NAME=args.model,
        DEVICE=args.device,
        COMPUTE_TYPE=args.compute_type,
        CPU_THREADS=args.threads,
        DECODE_BATCH=args.batch,
        REDIS_URL="redis://x:1/0",
    )
    engine = Engine(settings)
    engine.load()
    audios = [conversation([SENTENCES[i % len(SENTENCES)]], lead_s=0.3, tail_s=0.5).audio for i in range(args.batch)]
    prompt = "" if args.no_prompt else " ".join(SENTENCES)  # cut by the decoder to its common length
    report: dict[str, object] = {
        "benchmark": "batching",
        "model": args.model,
        "device": engine.device,
        "compute_type": engine.compute_type,
        "batch": args.batch,
        "cpu_threads": args.threads,
        "prompt": not args.no_prompt,
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    for kind in ("interim", "final"):
        jobs = [
            (
                Job(
                    id="%s-%d" % (kind, i),
                    kind=JobKind(kind),
                    session="s%d" % i,
                    gateway="g",
                    utt=0,
                    audio_key="",
                    audio_end=len(a) * 2,
                    lang="en",
                    prompt=prompt,
                ),
                a,
            )
            for i, a in enumerate(audios)
        ]
        engine.decode_many(jobs)  # warm up
        alone_s = together_s = 0.0
        same = True
        for r in range(args.rounds):
            print("\r%s: round %d/%d" % (kind, r + 1, args.rounds), end="", flush=True)
            t = time.perf_counter()
            alone = [engine.decode_one(j, a).text for j, a in jobs]
            alone_s += time.perf_counter() - t
            t = time.perf_counter()
            together = engine.decode_many(jobs)
            together_s += time.perf_counter() - t
            same = same and [getattr(o, "text", None) for o in together] == alone
        n = len(jobs) * args.rounds
        gain = alone_s / together_s
        report[kind] = {
            "jobs_per_s_alone": round(n / alone_s, 2),
            "jobs_per_s_batched": round(n / together_s, 2),
            "gain": round(gain, 2),
            "same_text": same,
        }
        print(
            "\r%s: %.2f jobs/s alone, %.2f jobs/s in batches of %d: gain %.2fx (texts equal: %s)"
            % (kind, n / alone_s, n / together_s, args.batch, gain, same)
        )
    name = "batching-%s-b%d%s.json" % (engine.device, args.batch, "-noprompt" if args.no_prompt else "")
    out = ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("wrote %s" % out)


if __name__ == "__main__":
    main()
