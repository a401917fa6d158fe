"""File transcription through the cluster against faster-whisper alone, and what a file in
flight costs live sessions.

    python benchmarks/files.py [--minutes 10] [--label files]

The recording: the accuracy set's espeak-ng conversations (12 voices) and jfk.flac joined with
1 s gaps, repeated up to --minutes. Each way of transcribing it reports wall time, real-time
factor (wall / audio) and WER against the known text, all with the bundled tiny.en, CPU int8:

- the cluster (`stt up`, POST /v1/audio/transcriptions via `stt transcribe`'s client) with one
  decoder on both cores, one decoder on one core, and two decoders of one core each;
- faster-whisper's `BatchedInferencePipeline` (batch 8) and plain `transcribe` (beam 5) on the
  same file, in this process, on both cores.

Live: two real-time clients (stt bench's) stream a 4-sentence conversation through one `stt up`,
alone and then while the file is being transcribed: p95 end of speech to final.
Writes benchmarks/results/files-LABEL.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
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
    while sum(len(p) for p in parts) < minutes * 60 * 16000:
        for c in convs:
            parts += [c.speech.audio, gap]
            texts.append(c.speech.text)
    audio = np.concatenate(parts)
    sf.write(path, audio, 16000, subtype="PCM_16")
    print("recording: %.1f min, %d words -> %s" % (len(audio) / 16000 / 60, len(" ".join(texts).split()), path))
    return " ".join(texts)


def through_cluster(path: Path, env: dict[str, str]) -> tuple[float, str]:
    from client.transcribe import transcribe_file
    from stt.bench import Service

    with Service({"MODEL_NAME": MODEL, "DEVICE": "cpu", "COMPUTE_TYPE": "int8", **env}) as (url, _pid):
        http = url.replace("ws://", "http://").rsplit("/v1/", 1)[0]
        args = argparse.Namespace(url=http, format="json", language="en", prompt="", words=False, api_key="")
        t0 = time.monotonic()
        text = json.loads(transcribe_file(path, args))["text"]
        return time.monotonic() - t0, text


def direct(path: Path, batched: bool) -> tuple[float, str]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from decoder.models import resolve

    model = WhisperModel(resolve(MODEL, True).path, device="cpu", compute_type="int8")
    t0 = time.monotonic()
    if batched:
        segments, _ = BatchedInferencePipeline(model).transcribe(str(path), language="en", batch_size=8)
    else:
        segments, _ = model.transcribe(str(path), language="en", beam_size=5)
    text = " ".join(s.text.strip() for s in segments)
    return time.monotonic() - t0, text


def live_p95(path: Path | None) -> dict[str, Any]:
    """p95 end of speech to final of two live clients, alone or with `path` transcribing."""
    from client.speech import SENTENCES, conversation
    from client.transcribe import transcribe_file
    from stt.bench import Service, analyse, run_client

    speech = conversation(list(SENTENCES[:4]), pause_s=1.2)
    with Service({"MODEL_NAME": MODEL, "DEVICE": "cpu", "COMPUTE_TYPE": "int8"}) as (url, _pid):
        worker = None
        if path is not None:
            http = url.replace("ws://", "http://").rsplit("/v1/", 1)[0]
            args = argparse.Namespace(url=http, format="json", language="en", prompt="", words=False, api_key="")
            worker = threading.Thread(target=transcribe_file, args=(path, args), daemon=True)
            worker.start()
            time.sleep(5)  # the upload decoded, split and queued: the file is in the decoders' hands

        async def clients() -> list[Any]:
            return list(await asyncio.gather(*(run_client(url, speech, 1.0, d) for d in (0.0, 1.3))))

        runs = asyncio.run(clients())
        in_flight = worker is not None and worker.is_alive()
        stats = analyse(runs, speech, 1.0)
    return {"p95_ms": stats["e2e_final_ms"]["p95"], "p50_ms": stats["e2e_final_ms"]["p50"], "file_in_flight": in_flight}


def main() -> int:
    from client.wer import wer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--label", default="files")
    args = p.parse_args()
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "files-recording.wav"
    reference = recording(args.minutes, path)
    duration = sf.info(str(path)).duration
    rows: list[dict[str, Any]] = []
    ways = [
        ("cluster, 1 decoder (2 cores)", lambda: through_cluster(path, {"DECODERS": "1"})),
        ("cluster, 1 decoder (1 core)", lambda: through_cluster(path, {"DECODERS": "1", "CPU_THREADS": "1"})),
        ("cluster, 2 decoders (1 core each)", lambda: through_cluster(path, {"DECODERS": "2", "CPU_THREADS": "1"})),
        ("faster-whisper BatchedInferencePipeline (batch 8)", lambda: direct(path, batched=True)),
        ("faster-whisper transcribe (beam 5)", lambda: direct(path, batched=False)),
    ]
    for name, way in ways:
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
    print("live sessions alone ...", flush=True)
    alone = live_p95(None)
    print("   ", alone, flush=True)
    print("live sessions with the file in flight ...", flush=True)
    loaded = live_p95(path)
    print("   ", loaded, flush=True)
    report = {
        "benchmark": "files",
        "audio_s": round(duration, 1),
        "model": MODEL,
        "ways": rows,
        "live": {"alone": alone, "with_file": loaded},
    }
    print("\n| way | wall | real-time factor | WER |\n| --- | --- | --- | --- |")
    for r in rows:
        print("| %s | %.1f s | %.3f | %.2f%% |" % (r["way"], r["wall_s"], r["rtf"], r["wer"]))
    print(
        "live p95 end of speech to final: %s ms alone, %s ms with the file in flight"
        % (alone["p95_ms"], loaded["p95_ms"])
    )
    out = out_dir / ("files-%s.json" % args.label)
    out.write_text(json.dumps(report, indent=2) + "\n")
    path.unlink()
    print("wrote %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
