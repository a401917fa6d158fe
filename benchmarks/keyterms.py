"""Do a session's key terms (decoder hotwords) help the model hear unusual names?

    python benchmarks/keyterms.py [--model tiny.en] [--voices en-us,en-gb,en-us+f3]

Sentences full of names and jargon a small model rarely spells right, spoken by espeak-ng in
several voices, each decoded as a final is (the decoder's own engine and final profile: beam,
temperature fallback, prompt) without key terms and with the sentence's names as key terms.
Reports the share of key-term words heard exactly and the WER of the whole sentence, and writes
benchmarks/results/keyterms-MODEL.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = (
    ("Please ask Siobhan Ngubane to review the Kubernetes manifests today.", ["Siobhan Ngubane", "Kubernetes"]),
    ("The Xiaomi shipment arrived in Reykjavik on Thursday morning.", ["Xiaomi", "Reykjavik"]),
    ("Doctor Nkechi Okafor prescribed ibuprofen and amoxicillin.", ["Nkechi Okafor", "ibuprofen", "amoxicillin"]),
    ("Our meeting with Anneliese Vandersloot moved to Wednesday.", ["Anneliese Vandersloot"]),
    ("Tell Saoirse that the Grafana dashboard shows Prometheus alerts.", ["Saoirse", "Grafana", "Prometheus"]),
    ("The Tsiolkovsky crater was mapped by the Chandrayaan orbiter.", ["Tsiolkovsky", "Chandrayaan"]),
    ("Joaquin flew to Szczecin and Wroclaw last summer.", ["Joaquin", "Szczecin", "Wroclaw"]),
    ("Send the invoice to Aoife Gallagher at Quarkus Limited.", ["Aoife Gallagher", "Quarkus"]),
    ("Our PostgreSQL replica in Tbilisi lags behind Kafka.", ["PostgreSQL", "Tbilisi", "Kafka"]),
    ("Ask Ngozi about the Oaxaca trip with Mateusz.", ["Ngozi", "Oaxaca", "Mateusz"]),
)


def words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


def main() -> int:
    from common.messages import Job, JobKind
    from common.settings import Settings
    from decoder.engine import Engine
    from stt.speech import synth
    from stt.wer import wer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--voices", default="en-us,en-gb,en-us+f3")
    args = p.parse_args()
    engine = Engine(Settings.from_env({}, MODEL_NAME=args.model, DEVICE="cpu", COMPUTE_TYPE="int8", DECODE_BATCH=1))
    engine.load()
    rows: list[dict[str, Any]] = []
    totals: dict[str, dict[str, float]] = {"off": {}, "on": {}}
    for voice in args.voices.split(","):
        for text, terms in CASES:
            audio = synth(text, voice=voice)
            row: dict[str, Any] = {"voice": voice, "text": text, "terms": terms}
            for mode in ("off", "on"):
                job = Job(
                    id="kt",
                    kind=JobKind.FINAL,
                    session="kt",
                    gateway="kt",
                    utt=0,
                    audio_key="",
                    audio_end=len(audio) * 2,
                    lang="en",
                    hotwords=", ".join(terms) if mode == "on" else "",
                )
                out = engine.decode_one(job, audio)
                heard = set(words(out.text))
                term_words = [w for t in terms for w in words(t)]
                hits = sum(w in heard for w in term_words)
                row[mode] = {
                    "text": out.text,
                    "term_hits": hits,
                    "term_words": len(term_words),
                    "wer": wer(text, out.text),
                }
                t = totals[mode]
                t["hits"] = t.get("hits", 0) + hits
                t["terms"] = t.get("terms", 0) + len(term_words)
                t["wer_sum"] = t.get("wer_sum", 0.0) + row[mode]["wer"]
            rows.append(row)
            print(
                "%-9s %-62s terms %d/%d -> %d/%d"
                % (
                    voice,
                    text[:62],
                    row["off"]["term_hits"],
                    row["off"]["term_words"],
                    row["on"]["term_hits"],
                    row["on"]["term_words"],
                ),
                flush=True,
            )
    summary = {
        mode: {
            "term_words_heard_pct": round(100.0 * t["hits"] / t["terms"], 1),
            "mean_wer_pct": round(100.0 * t["wer_sum"] / len(rows), 1),
        }
        for mode, t in totals.items()
    }
    print(
        "\nkey-term words heard: %.1f%% without key terms, %.1f%% with them"
        % (summary["off"]["term_words_heard_pct"], summary["on"]["term_words_heard_pct"])
    )
    print(
        "mean sentence WER:    %.1f%% without, %.1f%% with"
        % (summary["off"]["mean_wer_pct"], summary["on"]["mean_wer_pct"])
    )
    path = ROOT / "benchmarks" / "results" / ("keyterms-%s.json" % Path(args.model).name)
    path.write_text(json.dumps({"model": args.model, "summary": summary, "rows": rows}, indent=1))
    print("wrote", path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
