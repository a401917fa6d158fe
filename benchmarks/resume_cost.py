"""What resumable sessions cost: gateway CPU per stream and end-of-speech-to-final latency with
the session state and message log kept in Redis (RESUME_TTL_S=60, the default) and without
(RESUME_TTL_S=0), at 1 and 6 real-time streams (benchmarks/ab_cost.py).

    python benchmarks/resume_cost.py [--rounds 3] [--streams 1,6]

Writes benchmarks/results/resume-cost.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from benchmarks.ab_cost import compare

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--streams", default="1,6")
    args = p.parse_args()
    variants = {"resume-on": {"RESUME_TTL_S": "60"}, "resume-off": {"RESUME_TTL_S": "0"}}
    rows = compare(variants, [int(n) for n in args.streams.split(",")], args.rounds)
    out = ROOT / "benchmarks" / "results" / "resume-cost.json"
    out.write_text(json.dumps({"rounds": args.rounds, "rows": rows, "when": time.strftime("%Y-%m-%d")}, indent=1))
    print("wrote", out.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
