"""What resumable sessions cost: gateway CPU per stream and end-of-speech-to-final latency with
the session state and message log kept in Redis (RESUME_TTL_S=60, the default) and without
(RESUME_TTL_S=0), at 1 and 6 real-time streams.

    python benchmarks/resume_cost.py [--rounds 3] [--streams 1,6]

Each round starts `stt up` once per setting (in alternating order: this machine's speed
drifts) and streams the bench's 4-sentence conversation from N native clients. Gateway CPU
per stream: CPU seconds of the gateway process over the clients' wall time, per stream.
Writes benchmarks/results/resume-cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = {"on": "60", "off": "0"}


def main() -> int:
    from stt.bench import Service, tree_cpu_s
    from stt.bench_clients import run_client
    from stt.speech import SENTENCES, conversation

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--streams", default="1,6")
    args = p.parse_args()
    ns = [int(n) for n in args.streams.split(",")]
    speech = conversation(list(SENTENCES[:4]), pause_s=1.2)
    latencies: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for rnd in range(args.rounds):
        order = list(SETTINGS) if rnd % 2 == 0 else list(reversed(SETTINGS))
        for name in order:
            env = {
                "MODEL_NAME": os.environ.get("MODEL_NAME", "tiny.en"),
                "DEVICE": "cpu",
                "COMPUTE_TYPE": "int8",
                "RESUME_TTL_S": SETTINGS[name],
            }
            with Service(env) as (url, pid):
                for n in ns:
                    key = "resume-%s-n%d" % (name, n)
                    print("round %d: %s ..." % (rnd + 1, key), flush=True)
                    rng = random.Random(n * 100 + rnd)
                    spread = speech.duration / len(speech.spans)
                    delays = [rng.uniform(0, spread) if n > 1 else 0.0 for _ in range(n)]

                    async def clients(delays: list[float] = delays) -> list[Any]:
                        return list(await asyncio.gather(*(run_client("native", url, speech, 1.0, d) for d in delays)))

                    cpu0, wall0 = tree_cpu_s(pid)["gateway"], time.monotonic()
                    runs = asyncio.run(clients())
                    wall = time.monotonic() - wall0
                    cpu.setdefault(key, []).append((tree_cpu_s(pid)["gateway"] - cpu0) / wall / n)
                    for run in runs:
                        if run.error:
                            print("  client error:", run.error)
                        finals = sorted(run.finals, key=lambda f: f[1]["utterance"])
                        for (at, _msg), (_start, end) in zip(finals, speech.spans):
                            latencies.setdefault(key, []).append((at - (run.t0 + end)) * 1000.0)
    rows: list[dict[str, Any]] = []
    for key, values in sorted(latencies.items()):
        rows.append(
            {
                "config": key,
                "finals": len(values),
                "e2e_p50_ms": round(float(np.percentile(values, 50)), 1),
                "e2e_p95_ms": round(float(np.percentile(values, 95)), 1),
                "gateway_cpu_per_stream_pct": round(100.0 * float(np.mean(cpu[key])), 3),
            }
        )
    print("\n%-18s %7s %9s %9s %22s" % ("config", "finals", "e2e p50", "e2e p95", "gateway CPU / stream"))
    for r in rows:
        print(
            "%-18s %7d %9.1f %9.1f %21.3f%%"
            % (r["config"], r["finals"], r["e2e_p50_ms"], r["e2e_p95_ms"], r["gateway_cpu_per_stream_pct"])
        )
    out = ROOT / "benchmarks" / "results" / "resume-cost.json"
    out.write_text(json.dumps({"rounds": args.rounds, "rows": rows, "when": time.strftime("%Y-%m-%d")}, indent=1))
    print("wrote", out.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
