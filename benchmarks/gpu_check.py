"""The GPU path on a machine with a GPU, in about five minutes (what `scripts/gpu-check` runs).

    python benchmarks/gpu_check.py [--model small] [--streams 1,8,32] [--device-index 0]

1. Loads the model on the GPU the way a decoder does (a model per lane, a warm-up decode each:
   a missing cuBLAS fails here, not at the first final); `small` if it can be had (downloaded
   or cached), else a random-weight model of small's dimensions (`stt make-test-model`): the
   compute cost is real, the words are not.
2. Decodes finals and interims on both lanes at once (every one must succeed).
3. Times finals alone, then beside a running background batch of file parts (20 s each): on a
   GPU each lane has its own model and worker, so a final must not wait for the batch.
4. Runs `stt bench` (one decoder on this GPU) at 1, 8 and 32 streams against a 1.0 s p95 and
   prints the streams this GPU holds, and the GPU memory used (nvidia-smi).
Writes benchmarks/results/gpu-check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def gpu_memory_mb() -> list[int]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return [int(x) for x in out.split()]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []


def the_model(name: str) -> str:
    """`name` if it loads (cached or downloadable), else a random-weight model of its size."""
    from decoder.models import resolve

    try:
        return resolve(name, True).path
    except Exception as exc:
        print("model %s cannot be had (%s): a random-weight model of its dimensions instead" % (name, exc))
        folder = Path(tempfile.gettempdir()) / ("stt-%s-random" % name)
        if not (folder / "model.bin").exists():
            subprocess.run([sys.executable, "-m", "stt", "make-test-model", str(folder), "--size", name], check=True)
        return str(folder)


def job(kind: str, i: int, audio: np.ndarray) -> Any:
    from common.messages import Job, JobKind

    return Job(
        id="%s-%d" % (kind, i),
        kind=JobKind(kind),
        session="gpu-check-%d" % i,
        gateway="",
        utt=i,
        audio_key="",
        audio_end=len(audio) * 2,
        lang="en",
        deadline=0,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small")
    p.add_argument("--streams", default="1,8,32")
    p.add_argument("--device-index", type=int, default=0)
    args = p.parse_args()
    report: dict[str, Any] = {"memory_before_mb": gpu_memory_mb()}
    path = the_model(args.model)
    failures = engine_checks(path, args, report)  # its models are freed when it returns
    bench_rc = bench(path, args, report)
    (ROOT / "benchmarks" / "results" / "gpu-check.json").write_text(json.dumps(report, indent=1))
    return 0 if not failures and bench_rc == 0 else 1


def engine_checks(path: str, args: argparse.Namespace, report: dict[str, Any]) -> int:
    """Steps 1-3; how many decodes failed."""
    from common.settings import Settings
    from decoder.engine import Engine
    from stt.speech import SENTENCES, conversation

    settings = Settings.from_env(
        {},
        MODEL_NAME=path,
        DEVICE="cuda",
        DEVICE_INDEX=args.device_index,
        COMPUTE_TYPE="float16",
        DECODE_BATCH=8,
    )
    t0 = time.monotonic()
    engine = Engine(settings)
    engine.load()
    report["load"] = {
        "seconds": round(time.monotonic() - t0, 1),
        "device": engine.device,
        "compute": engine.compute_type,
    }
    report["memory_loaded_mb"] = gpu_memory_mb()
    print(
        "1. loaded on %s:%d as %s in %.1f s"
        % (engine.device, engine.device_index, engine.compute_type, time.monotonic() - t0)
    )

    speech = [conversation([s], lead_s=0.3, tail_s=0.5).audio for s in SENTENCES[:8]]
    results: list[Any] = []

    def lane(kind: str) -> None:
        results.extend(engine.decode_many([(job(kind, i, a), a) for i, a in enumerate(speech)]))

    threads = [threading.Thread(target=lane, args=(k,)) for k in ("final", "interim")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures = [r for r in results if not hasattr(r, "text")]
    print("2. both lanes at once: %d decodes, %d failed" % (len(results), len(failures)))
    report["lanes"] = {"decodes": len(results), "failed": len(failures)}

    def finals_ms(n: int = 6) -> list[float]:
        out = []
        for i in range(n):
            a = speech[i % len(speech)]
            started = time.perf_counter()
            engine.decode_one(job("final", i, a), a)
            out.append((time.perf_counter() - started) * 1000)
        return out

    alone = finals_ms()
    part = np.concatenate(speech * 3)[: 16000 * 20]
    stop = threading.Event()

    def background() -> None:
        while not stop.is_set():
            engine.decode_many([(job("batch", i, part), part) for i in range(8)])

    runner = threading.Thread(target=background)
    runner.start()
    time.sleep(0.5)
    beside = finals_ms()
    stop.set()
    runner.join()
    report["final_ms"] = {"alone_p50": statistics.median(alone), "beside_batch_p50": statistics.median(beside)}
    print(
        "3. a final alone %.0f ms p50, beside a running batch of 8 file parts %.0f ms p50"
        % (statistics.median(alone), statistics.median(beside))
    )
    return len(failures)


def bench(path: str, args: argparse.Namespace, report: dict[str, Any]) -> int:
    """Step 4: `stt bench` through one decoder on this GPU; its exit status."""
    print("4. stt bench at %s streams (one decoder on this GPU) ..." % args.streams, flush=True)
    env = {
        **os.environ,
        "MODEL_NAME": path,
        "DEVICE": "cuda",
        "DEVICE_INDEX": str(args.device_index),
        "DECODERS": "1",
        "DECODE_BATCH": "8",
    }
    peak: list[int] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.wait(1.0):
            peak.extend(gpu_memory_mb())

    watcher = threading.Thread(target=watch)
    watcher.start()
    command = [sys.executable, "-m", "stt", "bench", "--streams", args.streams, "--slo-ms", "1000"]
    run = subprocess.run(
        [*command, "--no-floor", "--label", "gpu-check"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    watching.set()
    watcher.join()
    print(run.stdout[-3000:])
    report["bench_rc"] = run.returncode
    report["gpu_memory_peak_mb"] = max(peak) if peak else None
    summary = ROOT / "benchmarks" / "results" / "bench-gpu-check.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        report["capacity_at_1s_p95"] = data.get("capacity_at_slo")
        report["bench"] = [
            {"streams": r["streams"], "p50": r["e2e_final_ms"]["p50"], "p95": r["e2e_final_ms"]["p95"]}
            for r in data.get("results", [])
        ]
    print(
        "GPU: %s streams at a 1.0 s p95; GPU memory peak %s MB"
        % (report.get("capacity_at_1s_p95"), report["gpu_memory_peak_mb"])
    )
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
