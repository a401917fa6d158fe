"""What a background decode costs a final beside it, by the background's priority.

    python benchmarks/priority.py [--rounds 4] [--threads 2]

A final-sized decode (4 s of speech, beam 5) on one model while another model decodes 20 s
parts (a file's, beam 5) in a loop beside it, with the background model built in a thread at
nice 0 and at nice 19 (as the decoder's background lane is on a CPU: BACKGROUND_NICE), and
alone. The three conditions alternate round by round, since this machine's speed drifts.
Bundled tiny.en, CPU int8. Writes benchmarks/results/priority-tTHREADS.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from faster_whisper import WhisperModel, decode_audio

    from decoder.lanes import at_nice
    from decoder.models import resolve

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=2, help="CTranslate2 threads of each model")
    args = p.parse_args()
    path = resolve("tiny.en", True).path
    jfk = decode_audio(str(ROOT / "tests" / "data" / "jfk.flac"))
    final_audio, part_audio = jfk[: 16000 * 4], np.concatenate([jfk, jfk])[: 16000 * 20]

    def load() -> Any:
        return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=args.threads)

    def decode(model: Any, audio: Any) -> None:
        segments, _ = model.transcribe(audio, beam_size=5, without_timestamps=True)
        list(segments)

    final, background = load(), {0: load(), 19: at_nice(19, load)}
    for model in (final, *background.values()):
        decode(model, final_audio)
    ms: dict[str, list[float]] = {"alone": [], "beside nice 0": [], "beside nice 19": []}
    for n in range(args.rounds):
        print("round %d/%d" % (n + 1, args.rounds), flush=True)
        for name, nice in (("alone", None), ("beside nice 0", 0), ("beside nice 19", 19)):
            stop = threading.Event()

            def loop(
                model: Any = background.get(nice) if nice is not None else None, stop: threading.Event = stop
            ) -> None:
                while not stop.is_set():
                    decode(model, part_audio)

            busy = threading.Thread(target=loop) if nice is not None else None
            if busy:
                busy.start()
                time.sleep(0.5)
            for _ in range(3):
                t0 = time.perf_counter()
                decode(final, final_audio)
                ms[name].append((time.perf_counter() - t0) * 1000)
                time.sleep(0.1)
            stop.set()
            if busy:
                busy.join()
    report: dict[str, Any] = {"benchmark": "priority", "threads": args.threads, "final_ms": {}}
    print("\n| final decode | p50 | mean | max |\n| --- | --- | --- | --- |")
    for name, values in ms.items():
        row = {
            "p50": round(statistics.median(values)),
            "mean": round(statistics.mean(values)),
            "max": round(max(values)),
            "n": len(values),
        }
        report["final_ms"][name] = row
        print("| %s | %d ms | %d ms | %d ms |" % (name, row["p50"], row["mean"], row["max"]))
    out = ROOT / "benchmarks" / "results" / ("priority-t%d.json" % args.threads)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("wrote %s" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
