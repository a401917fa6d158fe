"""What each wire protocol costs: the same load through the native protocol, OpenAI Realtime
and Deepgram, against one `stt up`.

    python benchmarks/protocols.py [--rounds 3] [--streams 1,4]

N real-time clients each stream the bench's 4-sentence conversation; the protocols take turns
round by round (this machine's speed drifts). OpenAI's audio is 24 kHz PCM, so it is compared
with the native protocol at 24 kHz too (the same audio: the endpointer hears the same frames).
Per protocol and N: end of speech to final p50/p95 over all rounds, and the gateway's CPU per
stream (CPU seconds of the gateway process over the rounds' wall time, per stream). Writes
benchmarks/results/protocols.json.
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

# (protocol, rate, native finals with word times): Deepgram's finals always carry words, which
# costs the decoder an alignment pass; the native protocol is measured with and without them.
CONFIGS = (
    ("native", 16000, False),
    ("native", 16000, True),
    ("deepgram", 16000, True),
    ("native", 24000, False),
    ("openai", 24000, False),
)


def main() -> int:
    from stt.bench import Service, tree_cpu_s
    from stt.bench_clients import run_client
    from stt.speech import SENTENCES, conversation

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--streams", default="1,4")
    args = p.parse_args()
    ns = [int(n) for n in args.streams.split(",")]
    speech = conversation(list(SENTENCES[:4]), pause_s=1.2)
    latencies: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    env = {"MODEL_NAME": os.environ.get("MODEL_NAME", "tiny.en"), "DEVICE": "cpu", "COMPUTE_TYPE": "int8"}
    with Service(env) as (url, pid):
        for rnd in range(args.rounds):
            for n in ns:
                for protocol, rate, words in CONFIGS:
                    key = "%s%s-%dk-n%d" % (
                        protocol,
                        "+words" if protocol == "native" and words else "",
                        rate // 1000,
                        n,
                    )
                    print("round %d: %s ..." % (rnd + 1, key), flush=True)
                    rng = random.Random(n * 100 + rnd)
                    spread = speech.duration / len(speech.spans)
                    delays = [rng.uniform(0, spread) if n > 1 else 0.0 for _ in range(n)]

                    async def clients(
                        delays: list[float] = delays, protocol: str = protocol, rate: int = rate
                    ) -> list[Any]:
                        return list(
                            await asyncio.gather(*(run_client(protocol, url, speech, 1.0, d, rate) for d in delays))
                        )

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
    for key, values in latencies.items():
        rows.append(
            {
                "config": key,
                "finals": len(values),
                "e2e_p50_ms": round(float(np.percentile(values, 50)), 1),
                "e2e_p95_ms": round(float(np.percentile(values, 95)), 1),
                "gateway_cpu_per_stream_pct": round(100.0 * float(np.mean(cpu[key])), 3),
            }
        )
    print("\n%-26s %7s %9s %9s %22s" % ("config", "finals", "e2e p50", "e2e p95", "gateway CPU / stream"))
    for r in rows:
        print(
            "%-26s %7d %9.1f %9.1f %21.3f%%"
            % (r["config"], r["finals"], r["e2e_p50_ms"], r["e2e_p95_ms"], r["gateway_cpu_per_stream_pct"])
        )
    out = ROOT / "benchmarks" / "results" / "protocols.json"
    out.write_text(json.dumps({"rounds": args.rounds, "rows": rows, "when": time.strftime("%Y-%m-%d")}, indent=1))
    print("wrote", out.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
