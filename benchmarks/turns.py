"""End of turn with the end-of-turn model against silence alone, through Deepgram Flux.

    python benchmarks/turns.py [--streams 1,6] [--recorded 8] [--label NAME]

Two `stt up` services, one after the other: with the end-of-turn model (the default: decoders
load it), and without it (TURN_MODEL names no file: turns end on the silence rules). Each client
speaks a Flux session (`/v2/listen`, eot_threshold 0.7, eager_eot_threshold 0.5) in real time:
complete sentences (recorded LibriSpeech utterances and espeak-ng sentences, 2 s apart), and
espeak-ng sentences cut after a function word with a 400-800 ms pause spliced in. Per setting
and N: end of speech to EndOfTurn p50/p95 on complete sentences, with N clients started
together on the same audio (their sentences end at the same moment: bursts of finals) and
staggered by 0.7 s; the share of spliced sentences cut into two turns; WER of the EndOfTurn
transcripts; EagerEndOfTurn's lead over EndOfTurn and the TurnResumed rate; the gateway's CPU
per stream. Writes benchmarks/results/turns[-NAME].json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FUNCTION_WORDS = {"the", "a", "to", "and", "of", "with", "her", "these", "into", "on", "is"}
QUERY = "model=flux-general-en&encoding=linear16&sample_rate=16000&eot_threshold=0.7&eager_eot_threshold=0.5"


def talk(recorded: int, seed: int = 3) -> tuple[Any, list[dict[str, Any]]]:
    """One client's audio: complete sentences and spliced ones in turn; what each span is."""
    from benchmarks.evalset import REAL
    from stt.speech import SENTENCES, recording, synth

    rng = random.Random(seed)
    refs = json.loads((REAL / "refs.json").read_text())
    names = sorted(refs)[:recorded]
    pieces: list[np.ndarray] = [np.zeros(8000, np.float32)]
    spans: list[dict[str, Any]] = []
    pos = 8000

    def add(audio: np.ndarray, item: dict[str, Any]) -> None:
        nonlocal pos
        spans.append({**item, "start": pos / 16000, "end": (pos + len(audio)) / 16000})
        pieces.extend([audio, np.zeros(32000, np.float32)])
        pos += len(audio) + 32000

    for i, sentence in enumerate(SENTENCES):
        voice = ("en-us", "en-gb", "en-us+f3")[i % 3]
        add(synth(sentence, voice=voice), {"kind": "complete", "text": sentence, "source": "espeak"})
        words = sentence.rstrip(".").split()
        cuts = [j for j, w in enumerate(words[1:-2], 1) if w.lower().strip(",") in FUNCTION_WORDS]
        if cuts:
            j = rng.choice(cuts)
            gap = np.zeros(int(rng.uniform(0.4, 0.8) * 16000), np.float32)
            halves = [synth(" ".join(words[: j + 1]), voice=voice), gap, synth(" ".join(words[j + 1 :]), voice=voice)]
            add(np.concatenate(halves), {"kind": "spliced", "text": sentence, "pause_s": len(gap) / 16000})
        if i < len(names):
            rec = recording(str(REAL / names[i]), refs[names[i]]["text"].lower(), tail_s=0.0)
            add(rec.audio, {"kind": "complete", "text": rec.texts[0], "source": "recorded"})
    return np.concatenate(pieces), spans


async def client(url: str, pcm: bytes, delay: float) -> tuple[float, list[tuple[float, dict[str, Any]]]]:
    """Stream in real time after `delay`; (when the audio began, every message with its time)."""
    import websockets

    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    got: list[tuple[float, dict[str, Any]]] = []
    async with websockets.connect(url + "?" + QUERY, max_size=2**23) as ws:
        t0 = loop.time()

        async def send() -> None:
            for i in range(0, len(pcm), 3200):
                await asyncio.sleep(max(0.0, t0 + i / 32000 - loop.time()))
                await ws.send(pcm[i : i + 3200])
            await ws.send(json.dumps({"type": "CloseStream"}))

        sender = asyncio.create_task(send())
        async for raw in ws:
            got.append((loop.time() - t0, json.loads(raw)))
        await sender
    return t0, got


def score(spans: list[dict[str, Any]], msgs: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    from stt.wer import wer

    turns = [(t, m) for t, m in msgs if m.get("type") == "TurnInfo"]
    ends = [(t, m) for t, m in turns if m["event"] == "EndOfTurn"]
    # EndOfTurn latency (s) of each complete sentence, by its index in spans; the spliced ones
    # cut in two, with their turns.
    latencies: dict[int, float] = {}
    cuts: list[dict[str, Any]] = []
    spliced, refs, hyps = 0, [], []
    for i, span in enumerate(spans):
        mine = [
            (t, m)
            for t, m in ends
            if m["audio_window_end"] > span["start"] + 0.2 and m["audio_window_start"] < span["end"] - 0.2
        ]
        if span["kind"] == "spliced":
            spliced += 1
            if len(mine) > 1:
                cuts.append({"span": i, "turns": [m["transcript"] for _, m in mine]})
            continue
        if mine:
            latencies[i] = mine[-1][0] - span["end"]
        refs.append(span["text"])
        hyps.append(" ".join(m["transcript"] for _, m in mine))
    eager = [t for t, m in turns if m["event"] == "EagerEndOfTurn"]
    resumed = [t for t, m in turns if m["event"] == "TurnResumed"]
    leads = []
    for t_end, end in ends:
        # The turn's last EagerEndOfTurn, if no TurnResumed took it back: how much sooner it came.
        of_turn = [(t, str(m["event"])) for t, m in turns if m["turn_index"] == end["turn_index"]]
        told = [t for t, e in of_turn if e in ("EagerEndOfTurn", "TurnResumed")]
        if told and dict(of_turn)[told[-1]] == "EagerEndOfTurn":
            leads.append(t_end - told[-1])
    return {
        "latencies": latencies,
        "cuts": cuts,
        "spliced": spliced,
        "wer": wer(" ".join(refs), " ".join(hyps)),
        "eager": len(eager),
        "resumed": len(resumed),
        "leads": leads,
    }


def main() -> int:
    from common.audio import float32_to_pcm16
    from stt.bench import Service, pct, tree_cpu_s
    from stt.bench_metrics import scrape, speculation

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", default="1,6")
    p.add_argument("--recorded", type=int, default=8, help="recorded utterances per client")
    p.add_argument("--label", default="")
    p.add_argument(
        "--settings",
        default="model,silence",
        help="of model (the end-of-turn model), silence (without it), nospec (without it, SPECULATE_MS=0)",
    )
    p.add_argument("--env", default="", help="KEY=VALUE,... set for every setting's service")
    p.add_argument(
        "--service-log",
        default="",
        help="append the services' output to this file (with --env LOG_LEVEL=DEBUG: each would-be final, "
        "end-of-turn answer and end, with its time)",
    )
    p.add_argument("--arrangements", default="together,staggered", help="of N>1 clients: together, staggered")
    p.add_argument("--stagger-at", default="", help="the N to run staggered (default: every N>1)")
    args = p.parse_args()
    extra = dict(kv.split("=", 1) for kv in args.env.split(",") if kv)
    audio, spans = talk(args.recorded)
    pcm = float32_to_pcm16(audio)
    print(
        "each client: %.0f s, %d sentences (%d spliced)"
        % (len(audio) / 16000, len(spans), sum(s["kind"] == "spliced" for s in spans))
    )
    no_model = {"TURN_MODEL": "/nonexistent/no-turn-model.onnx"}
    known = {"model": {"EOT_MODEL": "on"}, "silence": no_model, "nospec": {**no_model, "SPECULATE_MS": "0"}}
    settings = {name: known[name] for name in args.settings.split(",")}
    rows = []
    for name, env in settings.items():
        with Service({"MODEL_NAME": "tiny.en", **env, **extra}, log=args.service_log) as (url, pid):
            flux = url.replace("/v1/listen", "/v2/listen")
            for n in [int(x) for x in args.streams.split(",")]:
                for arrangement in ("together",) if n == 1 else args.arrangements.split(","):
                    if arrangement == "staggered" and args.stagger_at and str(n) not in args.stagger_at.split(","):
                        continue
                    delays = [0.0 if arrangement == "together" else 0.7 * i for i in range(n)]
                    print("%s, %d stream(s), %s ..." % (name, n, arrangement), flush=True)
                    cpu0, wall0, counters = tree_cpu_s(pid)["gateway"], time.monotonic(), scrape(url)
                    results = asyncio.run(_all(flux, pcm, delays))
                    cpu_s, wall = tree_cpu_s(pid)["gateway"] - cpu0, time.monotonic() - wall0
                    scores = [score(spans, msgs) for _, msgs in results]
                    lat = [x for s in scores for x in s["latencies"].values()]
                    row = {
                        "setting": name,
                        "streams": n,
                        "arrangement": arrangement,
                        "eot_p50_ms": pct(lat, 50, 1000),
                        "eot_p95_ms": pct(lat, 95, 1000),
                        "spliced_cut": sum(len(s["cuts"]) for s in scores),
                        "spliced": sum(s["spliced"] for s in scores),
                        "wer_pct": round(100 * float(np.mean([s["wer"] for s in scores])), 2),
                        "eager": sum(s["eager"] for s in scores),
                        "resumed": sum(s["resumed"] for s in scores),
                        "eager_lead_p50_ms": pct([x for s in scores for x in s["leads"]], 50, 1000),
                        "gateway_cpu_per_stream_pct": round(100 * cpu_s / wall / n, 3),
                        "speculative": speculation(counters, scrape(url)),
                    }
                    print("  " + json.dumps(row), flush=True)
                    # Each client's EndOfTurn latency (s) per complete sentence, by its index in spans.
                    latencies_s = [{i: round(x, 3) for i, x in s["latencies"].items()} for s in scores]
                    rows.append({**row, "latencies_s": latencies_s, "cuts": [s["cuts"] for s in scores]})
    out = ROOT / "benchmarks" / "results" / ("turns%s.json" % ("-" + args.label if args.label else ""))
    from decoder.devices import cpu_summary

    when, machine = time.strftime("%Y-%m-%d"), cpu_summary()
    out.write_text(json.dumps({"spans": spans, "rows": rows, "when": when, "machine": machine}, indent=1))
    print("wrote", out.relative_to(ROOT))
    if not args.label:
        from benchmarks.charts import render

        render("turns")
    return 0


async def _all(url: str, pcm: bytes, delays: list[float]) -> list[tuple[float, list[tuple[float, dict[str, Any]]]]]:
    return list(await asyncio.gather(*(client(url, pcm, d) for d in delays)))


if __name__ == "__main__":
    raise SystemExit(main())
