"""Streamed accuracy against a direct decode of the same recordings with the same model.

    python benchmarks/accuracy.py [--concurrency 4] [--label NAME] [--set KEY=VALUE ...] [--no-longform]
    python benchmarks/accuracy.py --simulate          # no service: the gateway's endpointer and
                                                      # the decoder's engine in this process
    python benchmarks/accuracy.py --sweep             # streamed WER and latency per endpointing setting
    python benchmarks/accuracy.py --windows --label windows   # simulated WER and decode time per encoder window

The recorded set (the first table): 57 recorded LibriSpeech utterances (57 speakers, 29 female
and 28 male, 1.6 to 15 s; benchmarks/data/real) as 8 conversations of 7 or 8 speakers in turn
with pauses of 0.7 to 1.8 s, each utterance decoded directly as its own whole recording. The
espeak set (the second table): 12 espeak-ng conversations (voices en-us, en-gb, Scottish,
Caribbean, RP, New York, Lancaster and female/male variants; 130 to 200 words per minute), each
of 9 sentences of 1 to 20 s with pauses of 0.4 to 2 s between them, and jfk.flac: 109
utterances, each conversation decoded directly as one whole recording. Conversations are
streamed in real time through `stt up` (started here with the bundled tiny.en unless MODEL_NAME
says otherwise; `--concurrency` clients at once); direct decodes are faster-whisper's own
`transcribe` with the same model and beam. WER is Whisper's English normalizer and jiwer.

The long-form row: every recorded utterance in one 8.6-minute recording, through
`POST /v1/audio/transcriptions` and through one live session, against a direct decode of the
same file.

Errors are attributed to sentences through one edit-distance alignment per conversation, so WER
is reported overall, per voice and per sentence length, with the sentences where the streamed
text lost most against the direct one side by side. Interims are checked too: how often a
final contradicts the prefix its interims announced as stable, and interim artifacts (empty
text, "...", sentence breaks the final does not have). Writes benchmarks/results/accuracy-LABEL.json.
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.accuracy_score import print_report, score
from benchmarks.evalset import LENGTHS, RECORDED_LENGTHS, Conversation, Session, eval_set, longform, recorded_set
from benchmarks.simulated import last_interims, simulate
from client.stream import ClientError, connect
from stt.bench import pct
from stt.bench_metrics import scrape, speculation
from stt.wer import align

# --- decoding ---------------------------------------------------------------------------------


async def stream_one(url: str, conv: Conversation, speed: float, eager_ms: int = 0) -> Session:
    out = Session()
    loop = asyncio.get_running_loop()
    try:
        async with connect(url, sample_rate=16000, lang="en", eager_eot_ms=eager_ms) as stream:
            t0 = loop.time()
            async for msg in stream.receive_while(stream.send_audio(conv.speech.pcm16, speed=speed)):
                if msg["type"] == "final":
                    out.finals.append(msg)
                    # End of speech to final: from the end of the sentence the final ends with
                    # (a final cut inside a sentence, at a pause of its own, is not counted).
                    ends = [e for _, e in conv.speech.spans if abs(e - msg["end"]) <= 0.5]
                    if ends:
                        out.latencies_ms.append((loop.time() - t0 - max(ends) / speed) * 1000.0)
                elif msg["type"] == "interim":
                    out.interims.append(msg)
                elif msg["type"] == "error":
                    out.error = "%s: %s" % (msg["code"], msg["message"])
    except (ClientError, OSError) as exc:
        out.error = str(exc)
    return out


async def stream_all(
    url: str, convs: list[Conversation], concurrency: int, speed: float, eager_ms: int = 0
) -> list[Session]:
    gate = asyncio.Semaphore(concurrency)

    async def one(conv: Conversation) -> Session:
        async with gate:
            print("  streaming %s (%.1f s) ..." % (conv.name, conv.speech.duration), flush=True)
            return await stream_one(url, conv, speed, eager_ms)

    return list(await asyncio.gather(*(one(c) for c in convs)))


def load_model(name: str) -> Any:
    from faster_whisper import WhisperModel

    from decoder.models import resolve

    choice = resolve(name)
    return WhisperModel(choice.path, device="cpu", compute_type="int8")


def direct(model: Any, convs: list[Conversation], beam: int) -> list[str]:
    """Each recording decoded whole by faster-whisper's own transcribe (its defaults, same beam):
    a conversation of recordings sentence by sentence, a synthesized one as a whole."""
    texts = []
    for conv in convs:
        clips = conv.sentence_audio if conv.sentence_audio is not None else [conv.speech.audio]
        said = []
        for clip in clips:
            segments, _ = model.transcribe(clip, language="en", beam_size=beam, vad_filter=False)
            said += [s.text.strip() for s in segments]
        texts.append(" ".join(said))
    return texts


# (label, final pad, interim pad, minimum window): cut to audio + pad, or a fixed length for
# clips shorter than it.
WINDOW_POINTS = (
    ("whole 30 s", 30.0, 30.0, 0.0),
    ("audio + 4 s", 4.0, 4.0, 0.0),
    ("audio + 2 s", 2.0, 2.0, 0.0),
    ("audio + 1 s", 1.0, 1.0, 0.0),
    ("fixed 10 s", 0.0, 0.0, 10.0),
    ("fixed 15 s", 0.0, 0.0, 15.0),
)


def windows(convs: list[Conversation], env: dict[str, str], direct_texts: list[str]) -> list[dict[str, Any]]:
    """Final and interim WER and decode time per job per encoder window."""
    rows = []
    for label, final_pad, interim_pad, min_s in WINDOW_POINTS:
        point = {
            "FINAL_WINDOW_PAD_S": str(final_pad),
            "INTERIM_WINDOW_PAD_S": str(interim_pad),
            "WINDOW_MIN_S": str(min_s),
        }
        print("\nsimulating with encoder windows of %s ..." % label, flush=True)
        sessions = simulate(convs, env["MODEL_NAME"], {**env, **point})
        finals, interims = score(convs, sessions, direct_texts), score(convs, last_interims(sessions), direct_texts)
        ms = {k: [x for s in sessions for x in s.decode_ms.get(k, [])] for k in ("final", "interim")}
        row = {
            "window": label,
            **point,
            "wer_final": finals["wer_streamed"],
            "wer_last_interim": interims["wer_streamed"],
            "final_ms_p50": pct(ms["final"], 50),
            "final_ms_mean": round(float(np.mean(ms["final"])), 1),
            "interim_ms_p50": pct(ms["interim"], 50),
            "interim_ms_mean": round(float(np.mean(ms["interim"])), 1),
            "jobs": {k: len(v) for k, v in ms.items()},
        }
        print(row, flush=True)
        rows.append(row)
    print("\n| window | final WER | last-interim WER | final ms/job p50 (mean) | interim ms/job p50 (mean) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            "| %s | %.2f%% | %.2f%% | %s (%s) | %s (%s) |"
            % (
                r["window"],
                r["wer_final"],
                r["wer_last_interim"],
                r["final_ms_p50"],
                r["final_ms_mean"],
                r["interim_ms_p50"],
                r["interim_ms_mean"],
            )
        )
    return rows


# --- scoring ----------------------------------------------------------------------------------


def run_streamed(convs: list[Conversation], env: dict[str, str], concurrency: int, speed: float) -> list[Session]:
    from stt.bench import Service

    with Service(env) as (url, _pid):
        return asyncio.run(stream_all(url, convs, concurrency, speed))


SWEEP = [
    {"FINAL_SILENCE_MS_MIN": "250", "FINAL_SILENCE_MS_MAX": "500"},
    {"FINAL_SILENCE_MS_MIN": "400", "FINAL_SILENCE_MS_MAX": "700"},
    {"FINAL_SILENCE_MS_MIN": "550", "FINAL_SILENCE_MS_MAX": "900"},
    {"FINAL_SILENCE_MS_MIN": "700", "FINAL_SILENCE_MS_MAX": "1200"},
]


async def long_form(url: str, speech: Any, speed: float) -> dict[str, Any]:
    """The long recording through POST /v1/audio/transcriptions and through one live session."""
    import io

    import httpx
    import soundfile as sf

    from common.audio import MODEL_RATE

    buf = io.BytesIO()
    sf.write(buf, speech.audio, MODEL_RATE, format="FLAC")
    http = url.replace("ws://", "http://").rsplit("/v1/", 1)[0]
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=3600) as client:
        response = await client.post(
            http + "/v1/audio/transcriptions", files={"file": ("long.flac", buf.getvalue())}, data={"language": "en"}
        )
    response.raise_for_status()
    file_s = time.monotonic() - t0
    conv = Conversation("longform", "recorded", 0, speech)
    print("  live session over the whole recording (%.0f s at %.1fx) ..." % (speech.duration, speed), flush=True)
    live = await stream_one(url, conv, speed)
    return {"file_text": response.json()["text"], "file_s": round(file_s, 1), "live": live}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=4, help="conversations streamed at once")
    p.add_argument("--speed", type=float, default=1.0, help="multiple of real time (1: real time)")
    p.add_argument("--limit", type=int, default=None, help="only the first N espeak conversations (and jfk)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a service setting")
    p.add_argument("--evalset", choices=("recorded", "espeak"), default="recorded", help="for the modes below")
    p.add_argument("--simulate", action="store_true", help="no service: endpointer and engine in process")
    p.add_argument("--sweep", action="store_true", help="streamed WER per endpointing setting")
    p.add_argument("--windows", action="store_true", help="simulated WER and decode time per encoder window")
    p.add_argument("--no-longform", action="store_true", help="skip the long-form row")
    p.add_argument("--sets", default="recorded,espeak", help="the sets a plain run streams (default: both)")
    p.add_argument("--label", default="", help="name of this run in the output file")
    p.add_argument("--eager-ms", type=int, default=0, help="clients ask for eager end of turn (ms; 0: off)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    env = {"MODEL_NAME": os.environ.get("MODEL_NAME", "tiny.en"), "DEVICE": "cpu", "COMPUTE_TYPE": "int8"}
    env.update(dict(kv.split("=", 1) for kv in args.set))
    beam = int(env.get("FINAL_BEAM", "5"))
    print("making the evaluation sets (recorded speech, espeak-ng) ...", flush=True)
    sets = {"recorded": (recorded_set(), RECORDED_LENGTHS), "espeak": (eval_set(args.limit), LENGTHS)}
    if not (args.sweep or args.windows or args.simulate):
        sets = {name: sets[name] for name in args.sets.split(",")}
    model = load_model(env["MODEL_NAME"])
    directs: dict[str, list[str]] = {}
    for name, (convs, _) in sets.items():
        print(
            "%s: %d conversations, %d utterances, %.0f s; direct decodes (%s, beam %d) ..."
            % (
                name,
                len(convs),
                sum(len(c.speech.texts) for c in convs),
                sum(c.speech.duration for c in convs),
                env["MODEL_NAME"],
                beam,
            ),
            flush=True,
        )
        directs[name] = direct(model, convs, beam)
    report: dict[str, Any] = {
        "benchmark": "accuracy",
        "label": args.label,
        "model": env["MODEL_NAME"],
        "settings": env,
        "concurrency": args.concurrency,
        "eager_ms": args.eager_ms,
        "speed": args.speed,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
    }
    convs, lengths = sets[args.evalset]
    direct_texts = directs[args.evalset]
    if args.windows:
        report["windows"] = windows(convs, env, direct_texts)
        report["mode"] = "simulate"
    elif args.sweep:
        report["sweep"] = []
        for point in SWEEP:
            print("\nstreaming with %s ..." % point, flush=True)
            r = score(convs, run_streamed(convs, {**env, **point}, args.concurrency, args.speed), direct_texts, lengths)
            print_report(r)
            report["sweep"].append({"settings": point, **{k: v for k, v in r.items() if k != "worst"}})
        print("\n%-40s %9s %9s %12s %12s" % ("setting", "streamed", "direct", "latency p50", "latency p95"))
        for row in report["sweep"]:
            print(
                "%-40s %8.2f%% %8.2f%% %12s %12s"
                % (
                    " ".join("%s=%s" % kv for kv in row["settings"].items()),
                    row["wer_streamed"],
                    row["wer_direct"],
                    row["final_latency_ms"]["p50"],
                    row["final_latency_ms"]["p95"],
                )
            )
    elif args.simulate:
        print("simulating the service in process ...", flush=True)
        report.update(score(convs, simulate(convs, env["MODEL_NAME"], env), direct_texts, lengths))
        report["mode"] = "simulate"
        print_report(report)
    else:
        from stt.bench import Service

        report["mode"] = "streamed"
        everything = [c for name in sets for c in sets[name][0]]
        with Service(env) as (url, _pid):
            print(
                "streaming %d conversations through stt up (%d at once, %.1fx real time) ..."
                % (len(everything), args.concurrency, args.speed),
                flush=True,
            )
            before = scrape(url)
            sessions = asyncio.run(stream_all(url, everything, args.concurrency, args.speed, args.eager_ms))
            report["speculative"] = speculation(before, scrape(url))
            print("speculative finals:", json.dumps(report["speculative"]), flush=True)
            if not args.no_longform:
                speech, _ = longform()
                print("long form: %.0f s in one recording ..." % speech.duration, flush=True)
                long = asyncio.run(long_form(url, speech, args.speed))
        at = 0
        for name, (convs, lengths) in sets.items():
            mine, at = sessions[at : at + len(convs)], at + len(convs)
            print("\n== %s set" % name)
            report[name] = score(convs, mine, directs[name], lengths)
            print_report(report[name])
        if not args.no_longform:
            segments, _ = model.transcribe(speech.audio, language="en", beam_size=beam, vad_filter=False)
            direct_long = " ".join(seg.text.strip() for seg in segments)
            report["longform"] = {
                "seconds": round(speech.duration, 1),
                "wer_direct": round(100 * align(speech.text, direct_long).wer, 2),
                "wer_file": round(100 * align(speech.text, long["file_text"]).wer, 2),
                "file_wall_s": long["file_s"],
                "wer_live": round(100 * align(speech.text, long["live"].text).wer, 2),
                "live_finals": len(long["live"].finals),
                "live_error": long["live"].error,
            }
            print("\nlong form:", json.dumps(report["longform"]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("accuracy%s.json" % ("-" + args.label if args.label else ""))
    path.write_text(json.dumps(report, indent=2) + "\n")
    print("\nwrote %s" % path)
    if path.name == "accuracy-recorded.json":
        from benchmarks.charts import render

        render("wer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
