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
    from benchmarks.ab_cost import measure, table
    from stt.bench import Service
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

                    measure(pid, key, n, clients, speech, latencies, cpu)
    rows = table(latencies, cpu)
    out = ROOT / "benchmarks" / "results" / "protocols.json"
    out.write_text(json.dumps({"rounds": args.rounds, "rows": rows, "when": time.strftime("%Y-%m-%d")}, indent=1))
    print("wrote", out.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
