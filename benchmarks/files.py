"""File transcription through the cluster against faster-whisper alone, and what a file in
flight costs live sessions.

    python benchmarks/files.py [--minutes 10] [--label files]

The recording: the accuracy set's espeak-ng conversations (12 voices) and jfk.flac joined with
1 s gaps, repeated up to --minutes. Each way of transcribing it reports wall time, real-time
factor (wall / audio) and WER against the known text, all with the bundled tiny.en, CPU int8:

- the cluster (`stt up`, POST /v1/audio/transcriptions via `stt transcribe`'s client) with one
  decoder on both cores, one decoder on one core, and two decoders of one core each;
- faster-whisper's `BatchedInferencePipeline` (batch 8; 2 threads and 1) and plain `transcribe`
  (beam 5, 2 threads) on the same file, in this process, on both cores.

Live: four real-time clients (stt bench's) stream a 4-sentence conversation through one `stt up`
(its defaults: two decoders on a CPU), alone and while two uploads of the file are being transcribed, in alternating
rounds (--rounds): p95 end of speech to final of each condition's pooled finals.
Writes benchmarks/results/files-LABEL.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "tiny.en"


def recording(minutes: float, path: Path) -> str:
    from benchmarks.evalset import eval_set

    convs = eval_set()
    gap = np.zeros(16000, np.float32)
    parts: list[np.ndarray] = []
    texts: list[str] = []
    i = 0
    while sum(len(p) for p in parts) < minutes * 60 * 16000:
        c = convs[i % len(convs)]
        parts += [c.speech.audio, gap]
        texts.append(c.speech.text)
        i += 1
    audio = np.concatenate(parts)
    sf.write(path, audio, 16000, subtype="PCM_16")
    print("recording: %.1f min, %d words -> %s" % (len(audio) / 16000 / 60, len(" ".join(texts).split()), path))
    return " ".join(texts)


def http_base(url: str) -> str:
    """The gateway's HTTP address from `stt up`'s WebSocket URL."""
    return url.replace("ws://", "http://").rsplit("/v1/", 1)[0]


def through_cluster(path: Path, env: dict[str, str]) -> tuple[float, str]:
    from client.transcribe import transcribe_file
    from stt.bench import Service

    with Service({"MODEL_NAME": MODEL, "DEVICE": "cpu", "COMPUTE_TYPE": "int8", **env}) as (url, _pid):
        http = http_base(url)
        args = argparse.Namespace(url=http, format="json", language="en", prompt="", words=False, api_key="")
        t0 = time.monotonic()
        text = json.loads(transcribe_file(path, args))["text"]
        return time.monotonic() - t0, text


def direct(path: Path, batched: bool, threads: int) -> tuple[float, str]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from decoder.models import resolve

    model = WhisperModel(resolve(MODEL, True).path, device="cpu", compute_type="int8", cpu_threads=threads)
    t0 = time.monotonic()
    if batched:
        segments, _ = BatchedInferencePipeline(model).transcribe(str(path), language="en", batch_size=8)
    else:
        segments, _ = model.transcribe(str(path), language="en", beam_size=5)
    text = " ".join(s.text.strip() for s in segments)
    return time.monotonic() - t0, text


def live(path: Path, rounds: int) -> dict[str, Any]:
    """p95 end of speech to final of four live clients through one `stt up`, alone and with two
    uploads of `path` in flight, in alternating rounds (this machine's speed drifts: the two
    conditions are measured side by side, and each pools the finals of every round)."""
    from stt.bench import Service, analyse
    from stt.bench_clients import ClientRun, run_client
    from stt.speech import SENTENCES, conversation

    speech = conversation(list(SENTENCES[:4]), pause_s=1.2)
    pooled: dict[str, list[ClientRun]] = {"alone": [], "with_file": []}
    in_flight: list[bool] = []
    with Service({"MODEL_NAME": MODEL, "DEVICE": "cpu", "COMPUTE_TYPE": "int8"}) as (url, _pid):
        http = http_base(url)

        async def clients() -> list[ClientRun]:
            return list(
                await asyncio.gather(*(run_client("native", url, speech, 1.0, d) for d in (0.0, 0.7, 1.4, 2.1)))
            )

        def files_queued() -> int:
            with urllib.request.urlopen(http + "/status", timeout=5) as r:
                files = json.load(r)["files"]
            return sum(f["parts"] > 0 for f in files)

        for n in range(rounds):
            print("  round %d/%d: live sessions alone ..." % (n + 1, rounds), flush=True)
            pooled["alone"] += asyncio.run(clients())
            print("  round %d/%d: live sessions with two uploads in flight ..." % (n + 1, rounds), flush=True)
            # The file twice at once, so that it is in flight for the whole of the live sessions;
            # then the uploads are stopped (their clients leave: the gateway cancels the rest).
            uploads = [
                subprocess.Popen(
                    [sys.executable, "-m", "stt", "transcribe", "--url", http, str(path)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(2)
            ]
            deadline = time.monotonic() + 120
            while files_queued() < 2 and time.monotonic() < deadline:
                time.sleep(0.2)  # both uploads decoded, split and queued: in the decoders' hands
            pooled["with_file"] += asyncio.run(clients())
            in_flight.append(all(u.poll() is None for u in uploads))
            for u in uploads:
                u.terminate()
                u.wait()
            deadline = time.monotonic() + 60
            while files_queued() and time.monotonic() < deadline:
                time.sleep(0.2)  # both cancelled, their parts off the queue
    out: dict[str, Any] = {}
    for name, runs in pooled.items():
        stats = analyse(runs, speech, 1.0)
        out[name] = {
            "p95_ms": stats["e2e_final_ms"]["p95"],
            "p50_ms": stats["e2e_final_ms"]["p50"],
            "finals": sum(len(r.finals) for r in runs),
            "wer": stats["wer"],
        }
    out["with_file"]["file_in_flight_every_round"] = all(in_flight)
    return out


def main() -> int:
    from stt.wer import wer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--label", default="files")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of live sessions alone / with the file")
    p.add_argument("--live-only", action="store_true", help="only the live sessions, not the ways of transcribing")
    args = p.parse_args()
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "files-recording.wav"
    reference = recording(args.minutes, path)
    duration = sf.info(str(path)).duration
    rows: list[dict[str, Any]] = []
    ways: list[tuple[str, Callable[[], tuple[float, str]]]] = [
        ("cluster, 1 decoder (2 cores: a thread per lane)", lambda: through_cluster(path, {"DECODERS": "1"})),
        ("cluster, 1 decoder (1 core)", lambda: through_cluster(path, {"DECODERS": "1", "CPU_THREADS": "1"})),
        ("cluster, 2 decoders (1 core each)", lambda: through_cluster(path, {"DECODERS": "2", "CPU_THREADS": "1"})),
        ("faster-whisper BatchedInferencePipeline (batch 8, 2 threads)", lambda: direct(path, True, 2)),
        ("faster-whisper BatchedInferencePipeline (batch 8, 1 thread)", lambda: direct(path, True, 1)),
        ("faster-whisper transcribe (beam 5, 2 threads)", lambda: direct(path, False, 2)),
    ]
    for name, way in [] if args.live_only else ways:
        print("%s ..." % name, flush=True)
        wall, text = way()
        row = {
            "way": name,
            "wall_s": round(wall, 1),
            "rtf": round(wall / duration, 4),
            "wer": round(100 * wer(reference, text), 2),
        }
        print("   ", row, flush=True)
        rows.append(row)
    print("live sessions, alone and with the file in flight (%d rounds) ..." % args.rounds, flush=True)
    latency = live(path, args.rounds)
    alone, loaded = latency["alone"], latency["with_file"]
    print("   ", latency, flush=True)
    report = {
        "benchmark": "files",
        "audio_s": round(duration, 1),
        "model": MODEL,
        "ways": rows,
        "live": latency,
    }
    print("\n| way | wall | real-time factor | WER |\n| --- | --- | --- | --- |")
    for r in rows:
        print("| %s | %.1f s | %.3f | %.2f%% |" % (r["way"], r["wall_s"], r["rtf"], r["wer"]))
    print(
        "live p95 end of speech to final: %s ms alone, %s ms with the file in flight (%+.1f%%), %d / %d finals"
        % (
            alone["p95_ms"],
            loaded["p95_ms"],
            100 * (loaded["p95_ms"] / alone["p95_ms"] - 1),
            alone["finals"],
            loaded["finals"],
        )
    )
    out = out_dir / ("files-%s.json" % args.label)
    out.write_text(json.dumps(report, indent=2) + "\n")
    path.unlink()
    print("wrote %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
