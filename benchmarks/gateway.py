"""Gateway CPU per real-time stream: resampling, framing, VAD, endpointing and Redis writes.

    python benchmarks/gateway.py [--streams 200] [--seconds 20] [--rate 16000]

Runs N simulated sessions in this process (the gateway's own Session objects, the real
WebRTC VAD and soxr resampler, a real private redis-server receiving every APPEND and XADD),
each fed espeak-ng speech in 100 ms chunks, and measures this process's CPU time. `--together K`
chunks arrive in the same event-loop turn (and share one Redis pipeline): a loaded gateway sees
many sockets readable per poll; K=1 is the worst case, no sharing at all. Redis's own
CPU is not counted (it is another process). WebSocket framing is not included. Writes JSON
under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis

from common.redis_server import RedisServer
from common.settings import Settings
from gateway.core.options import EotRule, SessionOptions
from gateway.core.session import Session
from gateway.metrics import GatewayMetrics
from gateway.store.jobqueue import JobQueue
from gateway.transport.driver import NoRecords, SessionDriver
from stt.speech import SENTENCES, conversation


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(args: argparse.Namespace) -> dict[str, object]:
    speech = conversation(list(SENTENCES[:4]), pause_s=1.0)
    pcm = speech.pcm16_at(args.rate)
    reps = max(1, int(args.seconds / speech.duration))
    pcm = pcm * reps
    chunk = args.rate * 2 // 10
    with RedisServer() as server:
        r = aioredis.Redis.from_url(server.url)
        settings = Settings.from_env({}, REDIS_URL=server.url)
        metrics = GatewayMetrics()
        queue = JobQueue(r, 60)  # one per process, as in the gateway
        sessions = [
            SessionDriver(
                Session(
                    settings,
                    SessionOptions(sample_rate=args.rate, lang="en", eot=EotRule() if args.eot else None),
                    "bench",
                    metrics,
                ),
                queue,
                NoRecords(),
                lambda m: None,
            )
            for _ in range(args.streams)
        ]
        audio_s = len(pcm) / 2 / args.rate * args.streams
        print(
            "feeding %d streams x %.0f s of %d Hz speech ..." % (args.streams, len(pcm) / 2 / args.rate, args.rate),
            flush=True,
        )
        c0, t0 = cpu(), time.perf_counter()
        for i in range(0, len(pcm), chunk):
            piece = pcm[i : i + chunk]
            for g in range(0, len(sessions), args.together):
                await asyncio.gather(*(s.feed(piece) for s in sessions[g : g + args.together]))
            if i % (chunk * 50) == 0:
                print("\r  %.0f%%" % (100 * i / len(pcm)), end="", flush=True)
        cpu_s, wall = cpu() - c0, time.perf_counter() - t0
        jobs = await r.xlen("stt:jobs:final") + await r.xlen("stt:jobs:interim")
        await r.aclose()
    print()
    per_stream_core = audio_s / cpu_s  # seconds of audio handled per CPU second
    report = {
        "benchmark": "gateway",
        "streams": args.streams,
        "rate": args.rate,
        "together": args.together,
        "end_of_turn_model": args.eot,
        "audio_seconds": round(audio_s, 1),
        "cpu_seconds": round(cpu_s, 2),
        "wall_seconds": round(wall, 2),
        "jobs_queued": jobs,
        "realtime_streams_per_core": round(per_stream_core, 1),
        "cpu_ms_per_stream_second": round(1000 * cpu_s / audio_s, 3),
        "target_streams_per_core": 500,
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(
        "%d streams at %d Hz, %d per loop turn: %.1f s of audio in %.2f CPU s -> %.0f real-time streams per core "
        "(target 500), %.3f ms CPU per stream-second"
        % (args.streams, args.rate, args.together, audio_s, cpu_s, per_stream_core, report["cpu_ms_per_stream_second"])
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument("--together", type=int, default=10, help="chunks arriving in one loop turn")
    parser.add_argument("--eot", action="store_true", help="sessions ask the end-of-turn model at each pause")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    name = "gateway-%d-x%d%s.json" % (args.rate, args.together, "-eot" if args.eot else "")
    out = Path(args.out or ROOT / "benchmarks" / "results" / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("wrote %s" % out)


if __name__ == "__main__":
    main()
