"""`stt bench`: N concurrent real-time clients through a running service, swept over N.

Every client streams the same espeak-ng conversation (known sentence boundaries) in real time.
Per final: end of speech (the known end of its sentence) to final received, and the latency
over the endpoint (final received less the end of speech as the VAD heard it and the silence
the endpointer waited: what decoding and delivery add to the endpoint; 0 is the floor); per
utterance: speech onset to first interim, and the gaps between interims. With speculation on,
the speculative finals used, cancelled and the decoder time they wasted (from the gateway's
/metrics). Finals missing, duplicated or out
of order are counted. A sweep stops once p95 end-of-speech-to-final exceeds `--slo-ms`;
"capacity at SLO" is the largest N that held it with no final missing. The floor is the same
utterances decoded directly with faster-whisper in this process, so the report separates the
model's time from the service's. Without `--url` the service is started with `stt up`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ExitCode, SttError
from common.process import cpu_seconds, descendants
from stt.bench_clients import PROTOCOLS, ClientRun, run_client
from stt.bench_metrics import scrape, speculation
from stt.bench_report import plot, table, waste
from stt.speech import SENTENCES, Speech, conversation
from stt.wer import align

PRE_ROLL_S = 0.3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="", help="a running gateway (default: start `stt up` with this environment)")
    p.add_argument("--streams", default="1,2,4,8,16", help="comma-separated N to sweep (default 1,2,4,8,16)")
    p.add_argument("--slo-ms", type=float, default=1500.0, help="p95 end-of-speech-to-final target (ms)")
    p.add_argument("--sentences", type=int, default=4, help="sentences per client conversation")
    p.add_argument("--pause", type=float, default=1.2, help="seconds of silence between sentences")
    p.add_argument("--speed", type=float, default=1.0, help="send at this multiple of real time")
    p.add_argument("--no-floor", action="store_true", help="skip the direct-decode floor")
    p.add_argument("--label", default="", help="name of this run in the output files")
    p.add_argument("--out", default="benchmarks/results", help="directory for the JSON and PNG")
    p.add_argument("--protocol", choices=PROTOCOLS, default="native", help="what the clients speak (default: native)")
    p.add_argument("--eager-ms", type=int, default=0, help="native clients ask for eager end of turn (ms; 0: off)")
    p.add_argument(
        "--end-of-turn",
        choices=("silence", "model"),
        default="silence",
        help="native clients' end-of-turn rule (model: the end-of-turn model; default: silence)",
    )


def tree_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of the processes below `pid`, by kind (decoder, gateway, other)."""
    out: dict[str, float] = {"decoder": 0.0, "gateway": 0.0, "other": 0.0}
    for child, cmd in descendants(pid).items():
        kind = "decoder" if "stt decoder" in cmd else "gateway" if "stt gateway" in cmd else "other"
        out[kind] += cpu_seconds(child)
    return out


def pct(values: list[float], q: float, scale: float = 1.0) -> float | None:
    """The q-th percentile of `values` times `scale` (1000: seconds to ms), to 0.1; None for none."""
    return round(float(np.percentile(values, q)) * scale, 1) if values else None


def analyse(runs: list[ClientRun], speech: Speech, speed: float) -> dict[str, Any]:
    e2e, over, vad_lag, overhead, queue, decode, first_interim, cadence = [], [], [], [], [], [], [], []
    missing = duplicated = out_of_order = errors = words = word_errors = 0
    for run in runs:
        errors += bool(run.error)
        heard = align(speech.text, " ".join(m["text"] for _, m in sorted(run.finals, key=lambda f: f[1]["utterance"])))
        words += len(heard.ref)
        word_errors += heard.errors
        numbers = [m["utterance"] for _, m in run.finals]
        duplicated += len(numbers) - len(set(numbers))
        out_of_order += sum(1 for a, b in itertools.pairwise(numbers) if b <= a)
        for start, end in speech.spans:
            # The final of a sentence is the one whose span overlaps it most.
            best = max(run.finals, key=lambda f: min(end, f[1]["end"]) - max(start, f[1]["start"]), default=None)
            if best is None or min(end, best[1]["end"]) <= max(start, best[1]["start"]):
                missing += 1
                continue
            at, msg = best
            latency = (at - (run.t0 + end / speed)) * 1000.0
            e2e.append(latency)
            if "endpoint_ms" in msg:
                # What the final took beyond the endpoint: from the end of speech as the VAD
                # heard it (the final's `end`) and the silence the endpointer then waited. The
                # floor is 0; the known end of the sentence is `vad_lag` earlier.
                heard_end = run.t0 + msg["end"] / speed
                over.append((at - heard_end) * 1000.0 - msg["endpoint_ms"])
                vad_lag.append((msg["end"] - end) * 1000.0)
            if "decode_ms" in msg:  # the native protocol says where a final's time went
                queue.append(msg["queue_ms"])
                decode.append(msg["decode_ms"])
                # What is neither the endpointing rule's silence nor the model: queueing, Redis,
                # routing, WebSocket. Measured from the gateway's own end of speech.
                gateway_end = run.t0 + (msg["end"] + msg.get("endpoint_ms", 0.0) / 1000.0) / speed
                overhead.append((at - gateway_end) * 1000.0 - msg["decode_ms"])
            mine = [t for t, m in run.interims if m["utterance"] == msg["utterance"]]
            if mine:
                first_interim.append((mine[0] - (run.t0 + start / speed)) * 1000.0)
                cadence += [(b - a) * 1000.0 for a, b in itertools.pairwise(mine)]
    return {
        "finals_expected": len(runs) * len(speech.spans),
        "finals_missing": missing,
        "finals_duplicated": duplicated,
        "finals_out_of_order": out_of_order,
        "sessions_failed": errors,
        "wer": round(100.0 * word_errors / max(1, words), 2),
        "e2e_final_ms": {"p50": pct(e2e, 50), "p95": pct(e2e, 95), "max": pct(e2e, 100)},
        "over_endpoint_ms": {"p50": pct(over, 50), "p95": pct(over, 95)},
        "vad_lag_ms": {"p50": pct(vad_lag, 50), "p95": pct(vad_lag, 95)},
        "service_overhead_ms": {"p50": pct(overhead, 50), "p95": pct(overhead, 95)},
        "final_queue_ms": {"p50": pct(queue, 50), "p95": pct(queue, 95)},
        "final_decode_ms": {"p50": pct(decode, 50), "p95": pct(decode, 95)},
        "first_interim_ms": {"p50": pct(first_interim, 50), "p95": pct(first_interim, 95)},
        "interim_cadence_ms": {"p50": pct(cadence, 50), "p95": pct(cadence, 95)},
        "interims_per_stream_s": round(sum(len(r.interims) for r in runs) / max(1, len(runs)) / speech.duration, 2),
    }


def floor(speech: Speech, texts: list[str]) -> dict[str, Any]:
    """The model's own time on the same utterances: a direct final-profile decode of each, with
    the prompt the service gave it (the texts of the finals before it, from the N=1 run)."""
    from common.messages import Job, JobKind
    from common.settings import Settings
    from decoder.engine import Engine
    from gateway.core.jobs import final_prompt

    settings = Settings.from_env()
    engine = Engine(settings)
    engine.load()
    segments, _ = engine.model.transcribe(speech.audio, language="en", beam_size=settings.FINAL_BEAM)
    direct_wer = align(speech.text, " ".join(s.text for s in segments)).wer
    times = []
    for _ in range(3):
        recent = ""
        for i, (start, end) in enumerate(speech.spans):
            a, b = max(0, int((start - PRE_ROLL_S) * 16000)), int((end + 0.5) * 16000)
            audio = speech.audio[a:b]
            job = Job(
                id="floor",
                kind=JobKind.FINAL,
                session="floor",
                gateway="",
                utt=i,
                audio_key="",
                audio_end=len(audio) * 2,
                lang="en",
                prompt=final_prompt("", recent),
            )
            times.append(engine.decode_one(job, audio).decode_ms)
            if i < len(texts) and texts[i]:
                recent = (recent + " " + texts[i]).strip()
    return {
        "model": engine.model_name,
        "device": engine.device,
        "compute_type": engine.compute_type,
        "decode_ms": {"p50": pct(times, 50), "p95": pct(times, 95)},
        "decodes": len(times),
        "wer_direct": round(100.0 * direct_wer, 2),
    }


class Service:
    """`stt up` on a free port for the length of the benchmark."""

    def __init__(self, env: dict[str, str] | None = None, log: str = "") -> None:
        from common.redis_server import free_port

        self.port = free_port()
        self.env = env or {}
        self.log = log  # a file the service's output is appended to (default: dropped)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> tuple[str, int]:
        from stt.supervisor import gateway_status

        env = {
            **os.environ,
            "METRICS_PORT": os.environ.get("METRICS_PORT", "0"),
            **self.env,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "REDIS_URL": "",
        }
        print("starting stt up on port %d (model %s) ..." % (self.port, env.get("MODEL_NAME", "base")), flush=True)
        with open(self.log or os.devnull, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stt", "up"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SttError("stt up exited with %s" % self.proc.returncode)
            if gateway_status("127.0.0.1", self.port, env.get("API_KEY", "").split(",")[0]) is not None:
                return "ws://127.0.0.1:%d/v1/listen" % self.port, self.proc.pid
            time.sleep(0.3)
        raise SttError("stt up was not ready within 600 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def sweep(
    url: str, speech: Speech, ns: list[int], args: argparse.Namespace, texts: list[str], service_pid: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """Runs N = ns[0], ns[1], … until the SLO breaks; `texts` gets the first run's final texts."""
    results, capacity = [], 0
    for n in ns:
        print("N=%-3d streaming %d clients x %.1f s of speech ..." % (n, n, speech.duration / args.speed), flush=True)
        # Starts spread over one sentence so the clients' utterances do not all end together.
        spread = speech.duration / max(1, len(speech.spans)) / args.speed
        rng = random.Random(n)
        cpu0, wall0 = tree_cpu_s(service_pid) if service_pid else {}, time.monotonic()
        counters = scrape(url)
        runs = await asyncio.gather(
            *(
                run_client(
                    args.protocol,
                    url,
                    speech,
                    args.speed,
                    rng.uniform(0, spread) if n > 1 else 0,
                    eager_ms=args.eager_ms,
                    end_of_turn=args.end_of_turn,
                )
                for _ in range(n)
            )
        )
        if not texts:
            texts += [m["text"] for _, m in sorted(runs[0].finals, key=lambda f: f[1]["utterance"])]
        stats = {"streams": n, **analyse(list(runs), speech, args.speed)}
        stats["speculative"] = speculation(counters, scrape(url))
        if service_pid:
            # Cores the service used while the clients ran (the decoders' share: decode utilisation).
            cpu1, wall = tree_cpu_s(service_pid), time.monotonic() - wall0
            stats["cores"] = {k: round((cpu1[k] - cpu0[k]) / wall, 2) for k in cpu1}
            stats["cores_per_stream"] = round(sum(stats["cores"].values()) / n, 2)
        results.append(stats)
        p95 = stats["e2e_final_ms"]["p95"]
        print(
            "      e2e final p50 %s ms, p95 %s ms (over the endpoint p50 %s ms); first interim p50 %s ms; WER %.1f%%; "
            "missing %d, duplicated %d, out of order %d; speculation %s"
            % (
                stats["e2e_final_ms"]["p50"],
                p95,
                stats["over_endpoint_ms"]["p50"],
                stats["first_interim_ms"]["p50"],
                stats["wer"],
                stats["finals_missing"],
                stats["finals_duplicated"],
                stats["finals_out_of_order"],
                waste(stats),
            ),
            flush=True,
        )
        held = p95 is not None and p95 <= args.slo_ms and stats["finals_missing"] == 0
        if not held:
            print("      SLO (p95 <= %.0f ms, nothing missing) not held at N=%d: sweep stops" % (args.slo_ms, n))
            break
        capacity = n
    return results, capacity


def run(args: argparse.Namespace) -> int:
    try:
        import jiwer  # noqa: F401
        import whisper_normalizer  # noqa: F401
    except ImportError:
        print(
            "stt bench scores WER with jiwer and whisper-normalizer: pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return ExitCode.UNAVAILABLE
    try:
        ns = sorted({int(x) for x in args.streams.split(",") if x.strip()})
    except ValueError:
        print("stt bench: --streams takes numbers like 1,2,4,8", file=sys.stderr)
        return ExitCode.USAGE
    print("making speech: %d sentences, %.1f s pauses (espeak-ng) ..." % (args.sentences, args.pause), flush=True)
    speech = conversation(list(SENTENCES[: args.sentences]), pause_s=args.pause)
    from decoder.devices import cpu_summary

    report: dict[str, Any] = {
        "benchmark": "stt bench",
        "label": args.label,
        "protocol": args.protocol,
        "eager_ms": args.eager_ms,
        "end_of_turn": args.end_of_turn,
        "slo_p95_ms": args.slo_ms,
        "sentences": args.sentences,
        "conversation_s": round(speech.duration, 2),
        "settings": {
            k: os.environ[k]
            for k in (
                "MODEL_NAME",
                "DEVICE",
                "COMPUTE_TYPE",
                "DECODE_BATCH",
                "CPU_THREADS",
                "DECODERS",
                "FINAL_WINDOW_PAD_S",
                "INTERIM_WINDOW_PAD_S",
                "WINDOW_MIN_S",
                "SPECULATE_MS",
            )
            if k in os.environ
        },
        "cpus": os.cpu_count(),
        "machine": cpu_summary(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    texts: list[str] = []
    try:
        if args.url:
            results, capacity = asyncio.run(sweep(args.url, speech, ns, args, texts))
        else:
            with Service() as service:
                url, pid = service
                results, capacity = asyncio.run(sweep(url, speech, ns, args, texts, pid))
    except SttError as exc:
        print("stt bench: %s" % exc, file=sys.stderr)
        return ExitCode.UNAVAILABLE
    if not args.no_floor:
        print("floor: decoding the %d utterances directly with faster-whisper ..." % len(speech.spans), flush=True)
        report["floor"] = floor(speech, texts)
        print(
            "      direct decode p50 %s ms, p95 %s ms; whole-recording WER %.1f%%"
            % (report["floor"]["decode_ms"]["p50"], report["floor"]["decode_ms"]["p95"], report["floor"]["wer_direct"]),
            flush=True,
        )
    report["results"] = results
    report["capacity_at_slo"] = capacity
    print()
    print(table(results))
    print("capacity at SLO (p95 end-of-speech to final <= %.0f ms): %d streams" % (args.slo_ms, capacity))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "bench" + ("-" + args.label if args.label else "")
    (out / (stem + ".json")).write_text(json.dumps(report, indent=2) + "\n")
    drawn = plot(results, args.slo_ms, out / (stem + ".png"), "stt bench %s" % args.label)
    print("wrote %s%s" % (out / (stem + ".json"), " and %s" % (out / (stem + ".png")) if drawn else ""))
    return ExitCode.OK
