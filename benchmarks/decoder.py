"""Overhead of the Redis path: XADD-to-result time against the same decode called directly.

    python benchmarks/decoder.py [--jobs 50] [--size tiny] [--kind final]

Starts a private redis-server and a real `stt decoder` process on a random-weight test model,
sends one job at a time (so queueing is not measured), and prints p50/p95 of: end to end,
the decoder's own decode time, the same decode done directly in this process, and the
overheads. Writes the table as JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import keys
from common.audio import float32_to_pcm16, pcm16_to_float32
from common.messages import Job, decode_result
from common.redis_server import RedisServer
from common.redisconn import close_pubsub
from common.settings import Settings
from decoder.engine import Engine
from decoder.testmodel import cached_test_model
from gateway.store.jobqueue import JobQueue
from stt.speech import SENTENCES, synth


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def run(args: argparse.Namespace) -> dict[str, object]:
    model = cached_test_model(args.size)
    clips = [pcm16_to_float32(float32_to_pcm16(synth(s))) for s in SENTENCES]
    with RedisServer() as server:
        env = {
            **os.environ,
            "MODEL_NAME": str(model),
            "REDIS_URL": server.url,
            "DEVICE": "cpu",
            "COMPUTE_TYPE": args.compute_type,
            "METRICS_PORT": "0",
            "DECODE_BATCH": "1",
            "DECODER_ID": "bench",
            "CPU_THREADS": str(args.threads),
            "LOG_LEVEL": "WARNING",
        }
        proc = subprocess.Popen([sys.executable, "-m", "stt", "decoder"], env=env, cwd=ROOT)
        r = aioredis.Redis.from_url(server.url)
        try:
            print("waiting for the decoder to load %s ..." % model, flush=True)
            while not await r.exists(keys.node_key("decoder", "bench")):
                if proc.poll() is not None:
                    raise SystemExit("decoder exited with %s" % proc.returncode)
                await asyncio.sleep(0.05)
            queue = JobQueue(r, 600)
            pubsub = r.pubsub()
            await pubsub.subscribe(keys.results_channel("bench-gw"))
            await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
            e2e, reported, jobs = [], [], []
            total = args.jobs + args.warmup
            for i in range(total):
                clip = clips[i % len(clips)]
                end = await queue.append_audio("bench", i, float32_to_pcm16(clip), 0)
                job = Job(
                    id=keys.final_job_id("bench", i),
                    kind=args.kind,
                    session="bench",
                    gateway="bench-gw",
                    utt=i,
                    audio_key=keys.audio_key("bench", i),
                    audio_end=end,
                    lang="en",
                    deadline=int(time.time() * 1000) + 60_000,
                )
                t0 = time.perf_counter()
                await queue.enqueue(job)
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30.0)
                    if msg is not None:
                        break
                elapsed = (time.perf_counter() - t0) * 1000
                result = decode_result(msg["data"])
                assert result.id == job.id and result.error is None, result
                if i >= args.warmup:
                    e2e.append(elapsed)
                    reported.append(result.decode_ms)
                    jobs.append((job, clip))
                print("\r  job %d/%d: %.1f ms end to end" % (i + 1, total, elapsed), end="", flush=True)
            print()
            await close_pubsub(pubsub)
        finally:
            proc.terminate()
            proc.wait(30)
            await r.aclose()

    print("decoding the same %d jobs directly ..." % len(jobs), flush=True)
    settings = Settings.from_env(
        {}, MODEL_NAME=str(model), DEVICE="cpu", COMPUTE_TYPE=args.compute_type, CPU_THREADS=args.threads
    )
    engine = Engine(settings)
    engine.load()
    engine.decode_one(*jobs[0])
    direct = []
    for job, clip in jobs:
        t0 = time.perf_counter()
        engine.decode_one(job, clip)
        direct.append((time.perf_counter() - t0) * 1000)

    over_direct = [a - b for a, b in zip(e2e, direct)]
    over_reported = [a - b for a, b in zip(e2e, reported)]
    rows = {
        "end_to_end_ms": e2e,
        "decoder_decode_ms": reported,
        "direct_decode_ms": direct,
        "overhead_vs_direct_ms": over_direct,
        "overhead_vs_decoder_decode_ms": over_reported,
    }
    table = {
        name: {"p50": round(pct(v, 50), 2), "p95": round(pct(v, 95), 2), "mean": round(statistics.fmean(v), 2)}
        for name, v in rows.items()
    }
    print(
        "\n%-32s %10s %10s %10s"
        % ("n=%d %s jobs, %s model" % (len(e2e), args.kind, args.size), "p50 ms", "p95 ms", "mean ms")
    )
    for name, stats in table.items():
        print("%-32s %10.2f %10.2f %10.2f" % (name, stats["p50"], stats["p95"], stats["mean"]))
    target = 5.0
    ok = table["overhead_vs_decoder_decode_ms"]["p50"] <= target
    print(
        "\nRedis-path overhead p50 %.2f ms (target <= %.0f ms): %s"
        % (table["overhead_vs_decoder_decode_ms"]["p50"], target, "met" if ok else "NOT met")
    )
    return {
        "benchmark": "decoder",
        "model": args.size,
        "kind": args.kind,
        "jobs": len(e2e),
        "compute_type": args.compute_type,
        "threads": args.threads,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "table": table,
        "target_overhead_p50_ms": target,
        "target_met": ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", default="tiny", choices=("micro", "tiny", "base"))
    parser.add_argument("--kind", default="final", choices=("final", "interim"))
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "decoder.json"))
    args = parser.parse_args()
    report = asyncio.run(run(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("wrote %s" % args.out)


if __name__ == "__main__":
    main()
