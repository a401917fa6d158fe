"""No words from non-speech: what the service makes of sounds that trip the voice detector.

    python benchmarks/nonspeech.py [--label NAME] [--set KEY=VALUE ...] [--concurrency 4]

The set (stt/noise.py): noise bursts (white, pink, brown), clicks, mains hum, breaths, tones and
music-like notes, about 60 cases at three levels; and mixed cases, recorded speech (LibriSpeech,
benchmarks/data/real) and espeak-ng sentences with a noise burst a second before and after.
Each case is streamed as a session through `stt up` (bundled tiny.en unless MODEL_NAME says
otherwise). A non-speech case is clean when no final carries text (an empty final, or
`no_speech`); a mixed case is scored by its WER against the spoken words. Also reports how many
non-speech cases open an utterance at all (the others never reach a decoder). Writes
benchmarks/results/nonspeech-LABEL.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REAL = ROOT / "benchmarks" / "data" / "real"


def mixed_speech() -> list[Any]:
    from stt.speech import SENTENCES, conversation, recording

    refs = json.loads((REAL / "refs.json").read_text())
    names = sorted(refs, key=lambda n: refs[n]["seconds"])[::6][:8]
    out = [recording(str(REAL / n), refs[n]["text"].lower(), tail_s=0.0) for n in names]
    out += [conversation([s], lead_s=0.0, tail_s=0.0) for s in SENTENCES[:4]]
    return out


def opens_an_utterance(audio: Any) -> bool:
    from common.audio import float32_to_pcm16
    from common.settings import Settings
    from gateway.core.endpoint import Endpointer
    from gateway.core.frames import Began

    s = Settings.from_env({})
    ep = Endpointer(s.VAD_MODE, s.PRE_ROLL_MS, s.MIN_SPEECH_MS, s.FINAL_SILENCE_MS_MIN, s.FINAL_SILENCE_MS_MAX, 25.0)
    pcm = float32_to_pcm16(audio)
    events = [e for i in range(0, len(pcm), 3200) for e in ep.feed(pcm[i : i + 3200])] + ep.force_end()
    return any(isinstance(e, Began) for e in events)


async def stream(url: str, sounds: list[Any], concurrency: int, speed: float) -> list[list[dict[str, Any]]]:
    from client.stream import ClientError, connect
    from common.audio import float32_to_pcm16

    gate = asyncio.Semaphore(concurrency)

    async def one(sound: Any) -> list[dict[str, Any]]:
        async with gate:
            finals: list[dict[str, Any]] = []
            try:
                async with connect(url, sample_rate=16000, lang="en", interim=False) as s:
                    async for msg in s.receive_while(s.send_audio(float32_to_pcm16(sound.audio), speed=speed)):
                        if msg["type"] in ("final", "error"):
                            finals.append(msg)
            except (ClientError, OSError) as exc:
                finals.append({"type": "error", "message": str(exc)})
            return finals

    return list(await asyncio.gather(*(one(s) for s in sounds)))


def main() -> int:
    from stt.bench import Service
    from stt.noise import mixed_set, nonspeech_set
    from stt.wer import align

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", default="")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a service setting")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--speed", type=float, default=3.0, help="multiple of real time")
    args = p.parse_args()
    env = {"MODEL_NAME": os.environ.get("MODEL_NAME", "tiny.en"), "DEVICE": "cpu", "COMPUTE_TYPE": "int8"}
    env.update(dict(kv.split("=", 1) for kv in args.set))
    noise, mixed = nonspeech_set(), mixed_set(mixed_speech())
    tripping = [s for s in noise if opens_an_utterance(s.audio)]
    print("%d non-speech cases, %d of them open an utterance; %d mixed cases" % (len(noise), len(tripping), len(mixed)))
    with Service(env) as (url, _pid):
        print("streaming ...", flush=True)
        got = asyncio.run(stream(url, noise + mixed, args.concurrency, args.speed))
    rows: list[dict[str, Any]] = []
    by_kind: dict[str, list[int]] = {}
    words = errors = 0
    for sound, finals in zip(noise + mixed, got):
        texts = [f.get("text", "") for f in finals if f["type"] == "final" and f.get("text")]
        failed = [f.get("message", "") for f in finals if f["type"] == "error"]
        row: dict[str, Any] = {"name": sound.name, "kind": sound.kind, "texts": texts, "errors": failed}
        if sound.text:
            a = align(sound.text, " ".join(texts))
            words, errors = words + len(a.ref), errors + a.errors
            row["wer"] = round(a.wer, 3)
            row["reference"] = sound.text
        else:
            row["clean"] = not texts
            row["opens_utterance"] = sound in tripping
            by_kind.setdefault(sound.kind, []).append(int(not texts))
        rows.append(row)
    clean = [r for r in rows if "clean" in r]
    tripped = [r for r in clean if r["opens_utterance"]]
    summary = {
        "nonspeech_cases": len(clean),
        "clean_pct": round(100.0 * sum(r["clean"] for r in clean) / len(clean), 1),
        "tripping_vad": len(tripped),
        "clean_of_tripping_pct": round(100.0 * sum(r["clean"] for r in tripped) / max(1, len(tripped)), 1),
        "by_kind_clean_pct": {k: round(100.0 * sum(v) / len(v), 1) for k, v in by_kind.items()},
        "mixed_cases": len(mixed),
        "mixed_wer_pct": round(100.0 * errors / max(1, words), 2),
    }
    print(json.dumps(summary, indent=1))
    for r in clean:
        if not r["clean"]:
            print("  %-10s %s" % (r["name"], r["texts"]))
    for r in rows:
        if "wer" in r and r["wer"] > 0.3:
            print("  %-10s WER %.2f: %s | %s" % (r["name"], r["wer"], r["reference"], r["texts"]))
    out = ROOT / "benchmarks" / "results" / ("nonspeech%s.json" % ("-" + args.label if args.label else ""))
    report = {"settings": env, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "summary": summary, "rows": rows}
    out.write_text(json.dumps(report, indent=1))
    print("wrote", out.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
