"""What a setting costs, measured A against B through `stt up`: gateway CPU per stream and end of
speech → final at N real-time native clients (benchmarks/resume_cost.py, benchmarks/tenants_cost.py).

Each round starts `stt up` once per variant (in alternating order: this machine's speed drifts)
and streams the bench's 4-sentence conversation from N native clients. Gateway CPU per stream:
CPU seconds of the gateway process over the clients' wall time, per stream."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from stt.speech import Speech


def compare(variants: dict[str, dict[str, str]], ns: list[int], rounds: int, query: str = "") -> list[dict[str, Any]]:
    """A row per variant and N: finals, e2e p50/p95 (ms), gateway CPU per stream (%). `query`
    is added to the clients' URL (a `?token=` key)."""
    from stt.bench import Service
    from stt.bench_clients import run_client
    from stt.speech import SENTENCES, conversation

    speech = conversation(list(SENTENCES[:4]), pause_s=1.2)
    latencies: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for rnd in range(rounds):
        order = list(variants) if rnd % 2 == 0 else list(reversed(variants))
        for name in order:
            env = {
                "MODEL_NAME": os.environ.get("MODEL_NAME", "tiny.en"),
                "DEVICE": "cpu",
                "COMPUTE_TYPE": "int8",
                **variants[name],
            }
            with Service(env) as (url, pid):
                for n in ns:
                    key = "%s-n%d" % (name, n)
                    print("round %d: %s ..." % (rnd + 1, key), flush=True)
                    rng = random.Random(n * 100 + rnd)
                    spread = speech.duration / len(speech.spans)
                    delays = [rng.uniform(0, spread) if n > 1 else 0.0 for _ in range(n)]

                    async def clients(delays: list[float] = delays, url: str = url + query) -> list[Any]:
                        return list(await asyncio.gather(*(run_client("native", url, speech, 1.0, d) for d in delays)))

                    measure(pid, key, n, clients, speech, latencies, cpu)
    return table(latencies, cpu)


def measure(
    pid: int,
    key: str,
    n: int,
    clients: Callable[[], Coroutine[Any, Any, list[Any]]],
    speech: Speech,
    latencies: dict[str, list[float]],
    cpu: dict[str, list[float]],
) -> None:
    """Run `clients` (N of them, each streaming `speech`) and add, under `key`, the gateway's CPU
    per stream (its process in the tree of `pid`) and each final's end of speech → final."""
    from stt.bench import tree_cpu_s

    cpu0, wall0 = tree_cpu_s(pid)["gateway"], time.monotonic()
    runs: list[Any] = asyncio.run(clients())
    wall = time.monotonic() - wall0
    cpu.setdefault(key, []).append((tree_cpu_s(pid)["gateway"] - cpu0) / wall / n)
    for run in runs:
        if run.error:
            print("  client error:", run.error)
        finals = sorted(run.finals, key=lambda f: f[1]["utterance"])
        for (at, _msg), (_start, end) in zip(finals, speech.spans):
            latencies.setdefault(key, []).append((at - (run.t0 + end)) * 1000.0)


def table(latencies: dict[str, list[float]], cpu: dict[str, list[float]]) -> list[dict[str, Any]]:
    """A row per config (finals, e2e p50/p95 in ms, gateway CPU per stream in %), printed."""
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
    return rows
