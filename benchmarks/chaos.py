"""Chaos: real speech through `stt up` while its parts are killed, and every utterance counted.

Several clients (the client library: sessions resume) stream espeak-ng conversations in real
time through `stt up` (2+ decoders and 2 gateways on one port, the real tiny.en) until
--utterances have been spoken, while this script

- SIGKILLs a random decoder every 20-40 s (stt up restarts it under the same name),
- SIGKILLs stt up's Redis at least twice (stt up restarts it; AOF keeps its data),
- SIGKILLs a gateway every 60-120 s (stt up restarts it; its clients reconnect to the other
  one on the same port and resume their sessions),
- publishes a malformed result on a gateway's channel and queues a poison job (its audio key
  is a hash).

Per utterance it counts finals delivered, duplicated, out of order, lost without an error, turned
into errors, sessions that a fault ended, resumes, and the WER of what was delivered; it samples
gateway, decoder and Redis memory every 30 s. Prints a table and writes JSON.

    python benchmarks/chaos.py --utterances 1000 --sessions 4 --out benchmarks/results/chaos.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client.stream import ClientError, connect
from common import keys
from common.messages import SCHEMA_VERSION, Job, JobKind, encode_job
from common.process import descendants
from stt.speech import SENTENCES, Speech, conversation
from stt.wer import wer

VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp", "en-us+m3", "en-gb-scotland")
CHUNK = 3200  # 100 ms of 16 kHz PCM16


@dataclass
class Tally:
    sessions: int = 0
    sessions_done: int = 0
    spoken: int = 0  # sentences streamed to completion in sessions that got `done`
    utterances: int = 0  # numbered by the gateway (finals + errors + lost) in finished sessions
    finals: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    lost: int = 0  # numbered, neither final nor error
    final_failed: int = 0
    other_errors: dict[str, int] = field(default_factory=dict)
    ended_by_fault: int = 0  # sessions that did not end with `done`
    resumes: int = 0  # sessions resumed after their connection broke
    refused: int = 0  # connects refused (1013, gateway down): retried
    ref_words: list[str] = field(default_factory=list)
    hyp_words: list[str] = field(default_factory=list)


def find(pid: int, what: str) -> list[int]:
    return [p for p, cmd in descendants(pid).items() if what in cmd]


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/%d/status" % pid).read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def stream_session(url: str, speech: Speech, tally: Tally, kills: list[float]) -> bool:
    """One session: stream `speech` in real time, stop, read until done (resuming across broken
    connections). False if refused at the start."""
    msgs: list[dict[str, Any]] = []
    completed = False
    try:
        async with connect(url, sample_rate=16000, lang="en", open_timeout=5) as stream:
            tally.sessions += 1
            try:
                async for msg in stream.receive_while(stream.send_audio(speech.pcm16, speed=1.0)):
                    msgs.append(msg)
                completed = stream.done
            except ClientError as exc:
                tally.other_errors[exc.code or "broken"] = tally.other_errors.get(exc.code or "broken", 0) + 1
            tally.resumes += stream.resumes
    except ClientError as exc:
        if exc.code == "overloaded" or exc.close_code is None:
            tally.refused += 1
            return False
        raise
    account(msgs, speech, completed, tally)
    return True


def account(msgs: list[dict[str, Any]], speech: Speech, completed: bool, tally: Tally) -> None:
    resolved: list[int] = []
    seen: set[int] = set()
    texts: list[str] = []
    for m in msgs:
        if "utterance" in m:
            seen.add(m["utterance"])
        if m["type"] == "final" or (m["type"] == "error" and "utterance" in m):
            n = m["utterance"]
            if n in resolved:
                tally.duplicated += 1
                continue
            if (resolved and n != resolved[-1] + 1) or (not resolved and n != 0):
                tally.out_of_order += 1
            resolved.append(n)
            if m["type"] == "final":
                tally.finals += 1
                texts.append(m["text"])
            else:
                tally.final_failed += 1
        elif m["type"] == "error":
            tally.other_errors[m["code"]] = tally.other_errors.get(m["code"], 0) + 1
    numbered = max(seen) + 1 if seen else 0
    tally.lost += numbered - len(resolved)
    if completed:
        tally.sessions_done += 1
        tally.utterances += numbered
        tally.spoken += len(speech.texts)
        tally.ref_words.append(speech.text)
        tally.hyp_words.append(" ".join(texts))
    else:
        tally.ended_by_fault += 1


async def client(
    url: str, pool: list[Speech], goal: int, until: float, tally: Tally, kills: list[float], seed: int
) -> None:
    rng = random.Random(seed)
    while tally.spoken < goal or time.monotonic() < until:
        speech = rng.choice(pool)
        if not await stream_session(url, speech, tally, kills):
            await asyncio.sleep(rng.uniform(0.5, 1.5))


async def redis_client(data_dir: str) -> aioredis.Redis:
    password = Path(data_dir, "password").read_text().strip()
    return aioredis.Redis(unix_socket_path=str(Path(data_dir, "redis.sock")), password=password)


async def inject(r: aioredis.Redis, gateway_id: str) -> dict[str, Any]:
    """A malformed result on the gateway's channel and a poison job (audio key of the wrong type)."""
    bad = msgpack.packb({"v": SCHEMA_VERSION, "id": "chaos", "kind": "final", "session": 123, "utt": 0})
    listeners = await r.publish(keys.results_channel(gateway_id), bad)
    await r.hset(keys.audio_key("chaos-poison", 0), "not", "audio")
    job = Job(
        id=keys.final_job_id("chaos-poison", 0),
        kind=JobKind.FINAL,
        session="chaos-poison",
        gateway=gateway_id,
        utt=0,
        audio_key=keys.audio_key("chaos-poison", 0),
        audio_end=32000,
    )
    await r.xadd(keys.STREAM_FINAL, {keys.JOB_FIELD: encode_job(job)})
    return {"malformed_result_listeners": listeners, "poison_job": job.id}


async def chaos(
    up: subprocess.Popen[bytes], data_dir: str, stop: asyncio.Event, run_s: float, log: dict[str, Any]
) -> None:
    rng = random.Random(7)
    t0 = time.monotonic()
    plan = {"redis": [0.3 * run_s, 0.7 * run_s], "inject": [0.15 * run_s]}
    next_decoder = rng.uniform(20, 40)
    plan["gateway"] = [rng.uniform(60, 120)]
    events: list[tuple[float, str]] = log.setdefault("events", [])

    async def wait_until(at: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, t0 + at - time.monotonic()))
        return not stop.is_set()

    timeline = sorted(
        [(at, kind) for kind, ats in plan.items() for at in ats] + [(next_decoder, "decoder")], key=lambda e: e[0]
    )
    while timeline and await wait_until(timeline[0][0]):
        at, kind = timeline.pop(0)
        now = round(time.monotonic() - t0, 1)
        if kind == "decoder":
            pids = find(up.pid, "stt decoder")
            if pids:
                victim = rng.choice(pids)
                os.kill(victim, signal.SIGKILL)
                events.append((now, "SIGKILL decoder %d" % victim))
            timeline.append((at + rng.uniform(20, 40), "decoder"))
            timeline.sort(key=lambda e: e[0])
        elif kind == "redis":
            for pid in find(up.pid, "redis-server"):
                os.kill(pid, signal.SIGKILL)
                events.append((now, "SIGKILL redis-server %d" % pid))
        elif kind == "gateway":
            pids = find(up.pid, "stt gateway")
            if pids:
                victim = rng.choice(pids)
                log["gateway_kills"].append(time.monotonic())
                os.kill(victim, signal.SIGKILL)
                events.append((now, "SIGKILL gateway %d" % victim))
            timeline.append((at + rng.uniform(60, 120), "gateway"))
            timeline.sort(key=lambda e: e[0])
        elif kind == "inject":
            r = await redis_client(data_dir)
            try:
                gateways: Any = await r.zrange(keys.node_index("gateway"), 0, -1)
                for gw in gateways:
                    log["injected"] = await inject(r, gw.decode())
                    events.append((now, "injected a malformed result and a poison job"))
            finally:
                await r.aclose()
        print("chaos t=%6.1fs %s" % (now, events[-1][1] if events else kind), flush=True)


async def sample_memory(up: subprocess.Popen[bytes], stop: asyncio.Event, curve: list[dict[str, Any]]) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        row: dict[str, Any] = {"t": round(time.monotonic() - t0, 1)}
        for name, what in (("gateway", "stt gateway"), ("redis", "redis-server"), ("decoders", "stt decoder")):
            row[name + "_mb"] = round(sum(rss_mb(p) for p in find(up.pid, what)), 1)
        curve.append(row)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 30)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    print("making %d conversations of espeak-ng speech…" % args.conversations, flush=True)
    rng = random.Random(1)
    pool = [
        conversation(
            [rng.choice(SENTENCES) for _ in range(8)],
            pause_s=[rng.uniform(0.8, 1.6) for _ in range(7)],
            voice=VOICES[i % len(VOICES)],
            speed=rng.choice((150, 160, 175)),
        )
        for i in range(args.conversations)
    ]
    port = args.port
    work = tempfile.mkdtemp(prefix="stt-chaos-")
    env = {
        **os.environ,
        "MODEL_NAME": args.model,
        "DECODERS": str(args.decoders),
        "GATEWAYS": str(args.gateways),
        "CPU_THREADS": "1",
        "PORT": str(port),
        "METRICS_PORT": "0",
        "LOG_LEVEL": "WARNING",
        "TMPDIR": work,
    }
    env.pop("REDIS_URL", None)
    log_path = Path(work, "stt-up.log")
    print("starting stt up (%d decoders, %s); log in %s" % (args.decoders, args.model, log_path), flush=True)
    with open(log_path, "wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "stt", "up"], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while "stt up: ready" not in log_path.read_text(errors="replace"):
        if up.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("stt up did not come up:\n" + log_path.read_text(errors="replace")[-3000:])
        await asyncio.sleep(0.5)
    [sock] = [ln.split(" on ")[1].split(" (")[0] for ln in log_path.read_text().splitlines() if "private redis" in ln]
    data_dir = str(Path(sock).parent)
    tally, stop = Tally(), asyncio.Event()
    log: dict[str, Any] = {"gateway_kills": []}
    curve: list[dict[str, Any]] = []
    url = "ws://127.0.0.1:%d/v1/listen" % port
    goal_per_client = args.utterances // args.sessions + 1
    run_s = max(goal_per_client * 4.0, args.minutes * 60)  # a sentence and its pause take about 4 s
    t0 = time.monotonic()
    until = t0 + args.minutes * 60
    watchers = [asyncio.create_task(sample_memory(up, stop, curve))]
    if not args.calm:
        watchers.append(asyncio.create_task(chaos(up, data_dir, stop, run_s, log)))
    goal = args.utterances
    clients = [
        asyncio.create_task(client(url, pool, goal, until, tally, log["gateway_kills"], seed=i))
        for i in range(args.sessions)
    ]

    async def progress() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 60)
            print(
                "t=%5.0fs spoken %d/%d, finals %d, errors %d, lost %d, sessions %d"
                % (
                    time.monotonic() - t0,
                    tally.spoken,
                    goal,
                    tally.finals,
                    tally.final_failed,
                    tally.lost,
                    tally.sessions,
                ),
                flush=True,
            )

    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*clients)
    finally:
        stop.set()
        await asyncio.gather(*watchers, reporter, return_exceptions=True)
        up.send_signal(signal.SIGTERM)
        code = up.wait(120)
    out_log = log_path.read_text(errors="replace")
    score = wer(" ".join(tally.ref_words), " ".join(tally.hyp_words))
    report = {
        "model": args.model,
        "decoders": args.decoders,
        "gateways": args.gateways,
        "clients": args.sessions,
        "wall_s": round(time.monotonic() - t0, 1),
        "tally": {k: v for k, v in asdict(tally).items() if k not in ("ref_words", "hyp_words")},
        "wer": round(score, 4),
        "events": log.get("events", []),
        "gateway_kills": len(log["gateway_kills"]),
        "injected": log.get("injected"),
        "memory": curve,
        "stt_up_exit": code,
        "restarts_logged": {
            "decoder": out_log.count("decoder-0 exited") + out_log.count("decoder-1 exited"),
            "gateway": sum(out_log.count("gateway-%d exited" % i) for i in range(args.gateways))
            + out_log.count("gateway exited"),
            "redis": out_log.count("redis-server exited"),
        },
        "log": str(log_path),
    }
    return report


def print_report(r: dict[str, Any]) -> None:
    t = r["tally"]
    print()
    print("| what | count |")
    print("| --- | --- |")
    for name in ("sessions", "sessions_done", "spoken", "utterances", "finals", "duplicated", "out_of_order", "lost",
                 "final_failed", "ended_by_fault", "resumes", "refused"):  # fmt: skip
        print("| %s | %s |" % (name, t[name]))
    print("| other errors | %s |" % (t["other_errors"] or "none"))
    print("| WER of delivered finals | %.1f%% |" % (100 * r["wer"]))
    print("| restarts logged (decoder / gateway / redis) | %s |" % " / ".join(map(str, r["restarts_logged"].values())))
    print("| stt up exit after SIGTERM | %s |" % r["stt_up_exit"])
    print()
    print("memory (RSS MB) every 30 s: t, gateway, redis, decoders")
    for row in r["memory"]:
        print("  %6.0f  %6.1f  %6.1f  %7.1f" % (row["t"], row["gateway_mb"], row["redis_mb"], row["decoders_mb"]))


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utterances", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=0.0, help="run at least this long (a soak)")
    p.add_argument("--calm", action="store_true", help="no faults: the same speech's WER without chaos")
    p.add_argument("--sessions", type=int, default=4, help="concurrent clients")
    p.add_argument("--decoders", type=int, default=2)
    p.add_argument("--gateways", type=int, default=2, help="gateways on the one port (clients resume on another)")
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--conversations", type=int, default=12)
    p.add_argument("--port", type=int, default=8790)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "chaos.json"))
    args = p.parse_args()
    report = asyncio.run(main(args))
    print_report(report)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print("wrote %s" % args.out)


if __name__ == "__main__":
    cli()
