"""What tenants' limits cost the sessions under them: gateway CPU per stream and end of speech →
final with a keys file of 1000 keys (the clients' among them, every limit set and never reached:
slots, the per-minute count, the day's audio, usage and the audit log all at work) against the
same clients on a plain API_KEY, at 1 and 6 real-time streams (benchmarks/ab_cost.py).

    python benchmarks/tenants_cost.py [--rounds 3] [--streams 1,6] [--keys 1000]

Writes benchmarks/results/tenants-cost.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "bench-tenant-key"


def keys_file(n: int, folder: Path) -> Path:
    tables = []
    for i in range(n):
        key = KEY if i == n // 2 else "other-key-%d" % i
        tables.append(
            '[[key]]\nname = "tenant-%d"\nsha256 = "%s"\nmax_streams = 100\nmax_files = 10\n'
            "sessions_per_minute = 1000\naudio_seconds_per_day = 100000000\n"
            % (i, hashlib.sha256(key.encode()).hexdigest())
        )
    path = folder / "keys.toml"
    path.write_text("\n".join(tables))
    return path


def main() -> int:
    from benchmarks.ab_cost import compare

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--streams", default="1,6")
    p.add_argument("--keys", type=int, default=1000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = keys_file(args.keys, Path(tmp))
        audit = str(Path(tmp) / "audit.log")
        variants = {
            "keys-file-%d" % args.keys: {"API_KEYS_FILE": str(path), "AUDIT_LOG": audit},
            "api-key": {"API_KEY": KEY, "AUDIT_LOG": "off"},
        }
        rows = compare(variants, [int(n) for n in args.streams.split(",")], args.rounds, query="?token=" + KEY)
    out = ROOT / "benchmarks" / "results" / "tenants-cost.json"
    out.write_text(json.dumps({"rounds": args.rounds, "rows": rows, "when": time.strftime("%Y-%m-%d")}, indent=1))
    print("wrote", out.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
