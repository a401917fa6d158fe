"""The steps of benchmarks/gpu_check.py, each run in a child process of its own: `step(args,
given)` returns its result (JSON-able); `given` holds the earlier steps' results."""

from __future__ import annotations

import glob
import json
import os
import re
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


def smi(fields: str, index: int | None = None) -> list[list[str]]:
    from decoder.devices import nvidia_smi

    return nvidia_smi(fields, index)


def memory_used_mb(index: int) -> int | None:
    rows = smi("memory.used", index)
    return int(rows[0][0]) if rows and rows[0][0].isdigit() else None


def cublas_found() -> dict[str, list[str]]:
    """Where libcublas.so.12 and .so.13 are: the NVIDIA wheels on sys.path, LD_LIBRARY_PATH, the
    usual CUDA folders, and the loader's cache."""
    from decoder.cuda_libs import wheel_lib_dirs

    dirs = [str(d) for d in wheel_lib_dirs()]
    for entry in sys.path:
        dirs += glob.glob(os.path.join(entry, "nvidia", "*", "lib")) + glob.glob(
            os.path.join(entry, "nvidia", "*", "*", "lib")
        )
    dirs += [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    dirs += [*glob.glob("/usr/local/cuda*/lib64"), "/usr/lib/x86_64-linux-gnu", "/usr/local/nvidia/lib64"]
    found: dict[str, list[str]] = {"12": [], "13": []}
    for d in dict.fromkeys(dirs):
        for major in found:
            path = os.path.join(d, "libcublas.so.%s" % major)
            if os.path.exists(path):
                found[major].append(path)
    try:
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        cache = ""
    for major in found:
        found[major] += [m for m in re.findall(r"libcublas\.so\.%s => (\S+)" % major, cache) if m not in found[major]]
    return found


def device(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    import ctranslate2

    from decoder.devices import cuda_count

    gpus = [
        dict(zip(("name", "driver", "memory_mb", "compute_capability"), row))
        for row in smi("name,driver_version,memory.total,compute_cap")
    ]
    count = cuda_count()
    types = {"cpu": sorted(ctranslate2.get_supported_compute_types("cpu"))}
    if count:
        try:
            types["cuda"] = sorted(ctranslate2.get_supported_compute_types("cuda", args.device_index))
        except Exception as exc:  # a driver CTranslate2 cannot talk to: said below, not a traceback
            types["cuda"] = ["unknown: %s" % exc]
    cublas = cublas_found()
    problem = None
    if not count:
        problem = "CTranslate2 %s sees no CUDA device (%s)" % (
            ctranslate2.__version__,
            "nvidia-smi sees %d GPU(s): a driver CTranslate2 cannot use?" % len(gpus) if gpus else "no GPU here",
        )
    elif not cublas["12"]:
        problem = "CUDA 12's cuBLAS (libcublas.so.12) is missing, and CTranslate2 %s's wheels are built for CUDA 12" % (
            ctranslate2.__version__
        )
        if cublas["13"]:
            problem += (
                "; this machine has CUDA 13's only (%s). Fix: install nvidia-cublas-cu12 (`pip install -e "
                "'.[gpu]'`, about 600 MB: more than a 64 MiB carry), or put CUDA 12's libcublas.so.12 and "
                "libcublasLt.so.12 on LD_LIBRARY_PATH, or use a CTranslate2 built for CUDA 13; what ran on "
                "an H200 with CUDA 13 only: CUDA 13's libcublas.so.13 and libcublasLt.so.13 linked under the "
                ".so.12 names in a folder put first on LD_LIBRARY_PATH (docs/operations/gpus.md)" % cublas["13"][0]
            )
        else:
            problem += ". Fix: pip install -e '.[gpu]' (nvidia-cublas-cu12), or CUDA 12's libraries on LD_LIBRARY_PATH"
    return {
        "gpus": gpus,
        "ctranslate2": ctranslate2.__version__,
        "cuda_devices": count,
        "compute_types": types,
        "cublas": cublas,
        "python": sys.version.split()[0],
        "problem": problem,
    }


def model(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The compute-cost model (real weights if cached, never downloaded: the machine is offline)
    and the real tiny.en, when its package is here."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from decoder.models import resolve
    from decoder.testmodel import cached_test_model

    out: dict[str, Any] = {}
    try:
        out["words_model"] = resolve(args.words_model or "tiny.en", True).path
    except Exception as exc:
        out["words_model"], out["words_model_missing"] = None, str(exc).splitlines()[0]
    size = args.model
    if not args.dry_run:
        try:
            out["cost_model"], out["cost_model_random"] = resolve(size, True).path, False
            return out
        except Exception as exc:
            print("model %s is not cached here (%s): a random-weight model of its dimensions" % (size, exc), flush=True)
    started = time.monotonic()
    out["cost_model"], out["cost_model_random"] = str(cached_test_model(size)), True
    out["made_in_s"] = round(time.monotonic() - started, 1)
    return out


def _engine(args: Any, path: str, batch: int = 8) -> Any:
    from common.settings import Settings
    from decoder.engine import Engine

    env = {"MODEL_NAME": path, "DECODE_BATCH": str(batch), "LOG_LEVEL": "WARNING"}
    env.update({"DEVICE": "cpu"} if args.dry_run else {"DEVICE": "cuda", "DEVICE_INDEX": str(args.device_index)})
    engine = Engine(Settings.from_env(env))
    engine.load()
    return engine


def _speech(n: int = 8) -> list[tuple[str, np.ndarray]]:
    """Made sentences (espeak-ng here, or the WAVs `--prepare` kept: STT_SPEECH_DIR)."""
    from stt.speech import SENTENCES, conversation

    return [(s, conversation([s], lead_s=0.3, tail_s=0.5).audio) for s in SENTENCES[:n]]


def _job(kind: str, i: int, audio: np.ndarray) -> Any:
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


def load(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    before = None if args.dry_run else memory_used_mb(args.device_index)
    started = time.monotonic()
    engine = _engine(args, given["model"]["cost_model"])
    seconds = time.monotonic() - started
    after = None if args.dry_run else memory_used_mb(args.device_index)
    return {
        "seconds": round(seconds, 1),
        "device": "%s:%d" % (engine.device, engine.device_index),
        "compute_type": engine.compute_type,
        "memory_mb": after - before if after is not None and before is not None else None,
    }


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def _errors(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def words(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    path = given["model"].get("words_model")
    if not path:
        return {"skipped": "no real weights here (%s)" % given["model"].get("words_model_missing")}
    engine = _engine(args, path)
    speech = _speech()
    outs = engine.decode_many([(_job("final", i, a), a) for i, (_, a) in enumerate(speech)])
    errors = sum(_errors(_words(t), _words(getattr(o, "text", ""))) for (t, _), o in zip(speech, outs))
    total = sum(len(_words(t)) for t, _ in speech)
    return {
        "wer_pct": round(100 * errors / total, 1),
        "sentences": len(speech),
        "failed": sum(not hasattr(o, "text") for o in outs),
    }


def lanes(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    engine = _engine(args, given["model"]["cost_model"])
    speech = [a for _, a in _speech()]
    results: list[Any] = []

    def lane(kind: str) -> None:
        results.extend(engine.decode_many([(_job(kind, i, a), a) for i, a in enumerate(speech)]))

    threads = [threading.Thread(target=lane, args=(k,)) for k in ("final", "interim")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = sum(not hasattr(r, "text") for r in results)

    def finals_ms(n: int = 6) -> list[float]:
        out = []
        for i in range(n):
            a = speech[i % len(speech)]
            started = time.perf_counter()
            engine.decode_one(_job("final", i, a), a)
            out.append((time.perf_counter() - started) * 1000)
        return out

    alone = finals_ms()
    part = np.concatenate(speech * 3)[: 16000 * 20]
    stop = threading.Event()

    def background() -> None:
        while not stop.is_set():
            engine.decode_many([(_job("batch", i, part), part) for i in range(8 if not args.dry_run else 1)])

    runner = threading.Thread(target=background)
    runner.start()
    time.sleep(0.5)
    beside = finals_ms()
    stop.set()
    runner.join()
    if failed:
        raise SystemExit("%d of %d decodes on both lanes at once failed" % (failed, len(results)))
    return {
        "decodes_both_lanes": len(results),
        "final_alone_ms_p50": round(statistics.median(alone), 1),
        "final_beside_ms_p50": round(statistics.median(beside), 1),
    }


def batch(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    sizes = [int(b) for b in args.batches.split(",")]
    engine = _engine(args, given["model"]["cost_model"], batch=max(sizes))
    speech = [a for _, a in _speech()]
    out: dict[str, Any] = {}
    for size in sizes:
        items = [(_job("final", i, speech[i % len(speech)]), speech[i % len(speech)]) for i in range(size)]
        engine.decode_many(items)  # the first round of a shape pays for its allocations
        rounds, started = 3, time.perf_counter()
        for _ in range(rounds):
            engine.decode_many(items)
        seconds = (time.perf_counter() - started) / rounds
        audio = sum(len(a) for _, a in items) / 16000
        out[str(size)] = {
            "ms_per_batch": round(seconds * 1000, 1),
            "finals_per_s": round(size / seconds, 1),
            "audio_s_per_s": round(audio / seconds, 1),
        }
        print("batch %d: %.0f ms, %.1f finals/s" % (size, seconds * 1000, size / seconds), flush=True)
    return {"batches": out}


def streams(args: Any, given: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.gpu_check import limits

    counts = [int(d) for d in args.decoders.split(",")]
    each = (limits(args.dry_run)["streams"] - 10) / len(counts)
    out: dict[str, Any] = {}
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-bench-"))
    for n in counts:
        env = {**os.environ, "MODEL_NAME": given["model"]["cost_model"], "DECODERS": str(n), "DECODE_BATCH": "8"}
        env.update({"DEVICE": "cpu"} if args.dry_run else {"DEVICE": "cuda", "DEVICE_INDEX": str(args.device_index)})
        label = "gpu-check-d%d" % n
        command = [
            sys.executable,
            "-m",
            "stt",
            "bench",
            "--streams",
            args.streams,
            "--slo-ms",
            "1000",
            "--sentences",
            "3",
        ]
        command += ["--no-floor", "--label", label, "--out", str(folder)]
        print("stt bench with %d decoder(s) at %s streams ..." % (n, args.streams), flush=True)
        try:
            done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=each)
        except subprocess.TimeoutExpired:
            out[str(n)] = {"status": "timeout", "seconds": round(each)}
            continue
        found = folder / ("bench-%s.json" % label)
        if done.returncode != 0 or not found.exists():
            out[str(n)] = {"status": "failed", "exit": done.returncode, "stderr": done.stderr[-1500:]}
            continue
        data = json.loads(found.read_text())
        out[str(n)] = {
            "streams_at_1s_p95": data.get("capacity_at_slo"),
            "p95_ms": {r["streams"]: r["e2e_final_ms"]["p95"] for r in data.get("results", [])},
        }
    if all("streams_at_1s_p95" not in v for v in out.values()):
        raise SystemExit("no stt bench run finished: %s" % json.dumps(out)[-1500:])
    return {"decoders": out}


STEPS = {
    "device": device,
    "model": model,
    "load": load,
    "words": words,
    "lanes": lanes,
    "batch": batch,
    "streams": streams,
}
