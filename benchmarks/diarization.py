"""Who spoke: speaker labels on conversations of 2, 3 and 4 recorded speakers.

    python benchmarks/diarization.py [--per-size 10] [--speed 6] [--parallel 1] [--label NAME]
    python benchmarks/diarization.py --cost [--stagger 0.7]

Conversations are built from benchmarks/data/speakers (10 LibriSpeech test-other speakers, 10
utterances each): 8 turns each, speakers taking turns at random (never the same twice running),
half the conversations mixing genders and half of one gender, turn gaps drawn from 0.5-1.5 s.
They are streamed live (the native protocol, `diarize: true`, and Deepgram's, `diarize=true`;
`--parallel` of them at once, at `--speed` times real time: faster cuts utterances differently,
below) through one `stt up` with tiny.en. Reported:

- the share of turns labelled right, each final matched to the turn it overlaps most, after
  the best one-to-one mapping of labels to speakers (a final that merged two turns counts as
  one wrong);
- the share of conversations whose speaker count is right;
- speaker-verification EER on the set (our encoder, every pair of utterances);
- the encoder's CPU per audio second;
- finals' p50/p95 (end of turn to final) at 6 streams in real time, diarization on and off.

Each conversation is also sent as a file (`response_format=diarized_json`): its turns labelled
right (each turn judged by the segment that overlaps it most), its speaker count, and DER with a
0.25 s collar (missed + false alarm + confusion over the reference speech, 10 ms frames; Whisper's
segments span the pauses between a speaker's sentences, which DER counts as false alarm), and the
confusion alone.
Writes benchmarks/results/diarization[-NAME].json.
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

from benchmarks.diarization_score import der, eer, score
from stt.bench import pct

DATA = ROOT / "benchmarks" / "data" / "speakers"


def load_set() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    import soundfile as sf

    refs = json.loads((DATA / "refs.json").read_text())
    audio = {name: np.asarray(sf.read(DATA / name, dtype="float32")[0]) for name in sorted(refs)}
    return refs, audio


def conversations(refs: dict[str, Any], per_size: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    by: dict[str, list[str]] = {}
    gender: dict[str, str] = {}
    for name, ref in sorted(refs.items()):
        by.setdefault(ref["speaker"], []).append(name)
        gender[ref["speaker"]] = ref["gender"]
    out = []
    for size in (2, 3, 4):
        for i in range(per_size):
            mixed = i % 2 == 0
            pool = sorted(by)
            if not mixed:
                g = rng.choice(["M", "F"])
                pool = [s for s in pool if gender[s] == g]
            speakers = rng.sample(pool, size)
            if mixed and len({gender[s] for s in speakers}) == 1:
                other = [s for s in sorted(by) if gender[s] != gender[speakers[0]]]
                speakers[-1] = rng.choice(other)
            left = {s: rng.sample(by[s], len(by[s])) for s in speakers}
            turns, prev = [], None
            order = list(speakers)  # everyone speaks at least once
            rng.shuffle(order)
            for t in range(8):
                s = order[t] if t < len(order) and order[t] != prev else rng.choice([x for x in speakers if x != prev])
                turns.append((s, left[s].pop()))
                prev = s
            gaps = [rng.uniform(0.5, 1.5) for _ in turns]
            out.append({"size": size, "mixed": mixed, "turns": turns, "gaps": gaps})
    return out


def render(conv: dict[str, Any], audio: dict[str, np.ndarray]) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    pieces = [np.zeros(8000, np.float32)]
    spans = []
    pos = 8000
    for (speaker, name), gap in zip(conv["turns"], conv["gaps"]):
        a = audio[name]
        spans.append((pos / 16000, (pos + len(a)) / 16000, speaker))
        pieces += [a, np.zeros(int(gap * 16000), np.float32)]
        pos += len(a) + int(gap * 16000)
    pieces.append(np.zeros(32000, np.float32))
    return np.concatenate(pieces), spans


async def send_paced(ws: Any, pcm: bytes, speed: float, t0: float, last: dict[str, Any]) -> None:
    """`pcm` in 0.1 s chunks at `speed` times real time from loop time `t0`, then `last`."""
    loop = asyncio.get_running_loop()
    for i in range(0, len(pcm), 3200):
        await asyncio.sleep(max(0.0, t0 + i / 32000 / speed - loop.time()))
        await ws.send(pcm[i : i + 3200])
    await ws.send(json.dumps(last))


async def stream(url: str, pcm: bytes, speed: float, diarize: bool) -> list[tuple[float, dict[str, Any]]]:
    import websockets

    loop = asyncio.get_running_loop()
    got: list[tuple[float, dict[str, Any]]] = []
    async with websockets.connect(url, max_size=2**23) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "lang": "en", "diarize": diarize}))
        assert json.loads(await ws.recv())["type"] == "started"
        t0 = loop.time()
        sender = asyncio.create_task(send_paced(ws, pcm, speed, t0, {"op": "stop"}))
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "final":
                got.append(((loop.time() - t0) * speed, msg))
            if msg["type"] == "done":
                break
        await sender
    return got


async def stream_deepgram(url: str, pcm: bytes, speed: float) -> list[dict[str, Any]]:
    """The same, over Deepgram's live protocol (`diarize=true`): each final's speaker is the
    one most of its words carry."""
    import websockets

    finals: list[dict[str, Any]] = []
    query = "?encoding=linear16&sample_rate=16000&punctuate=true&diarize=true"
    async with websockets.connect(url + query, max_size=2**23) as ws:
        t0 = asyncio.get_running_loop().time()
        sender = asyncio.create_task(send_paced(ws, pcm, speed, t0, {"type": "CloseStream"}))
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("type") == "Results" and msg.get("is_final"):
                words = msg["channel"]["alternatives"][0]["words"]
                if words:
                    who = [w["speaker"] for w in words]
                    speaker = max(set(who), key=who.count)
                    finals.append({"start": msg["start"], "end": msg["start"] + msg["duration"], "speaker": speaker})
        await sender
    return finals


async def live_batch(url: str, pcms: list[bytes], speed: float) -> list[tuple[list[Any], list[Any]]]:
    """Each conversation's native finals and Deepgram finals, the conversations streamed at once."""
    native = await asyncio.gather(*(stream(url, pcm, speed, True) for pcm in pcms))
    deepgram = await asyncio.gather(*(stream_deepgram(url, pcm, speed) for pcm in pcms))
    return [([m for _, m in n], d) for n, d in zip(native, deepgram)]


def transcribe_file(http: str, pcm: bytes) -> list[dict[str, Any]]:
    import io

    import httpx
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.frombuffer(pcm, dtype="<i2"), 16000, format="WAV", subtype="PCM_16")
    r = httpx.post(
        http + "/v1/audio/transcriptions",
        files={"file": ("talk.wav", buf.getvalue(), "audio/wav")},
        data={"model": "gpt-4o-transcribe-diarize", "response_format": "diarized_json"},
        timeout=300,
    )
    r.raise_for_status()
    segments: list[dict[str, Any]] = r.json()["segments"]
    return segments


def main() -> int:
    from common.audio import float32_to_pcm16
    from decoder.voice import VoiceEncoder, weights_path
    from stt.bench import Service

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-size", type=int, default=10, help="conversations of each size (2, 3, 4 speakers)")
    p.add_argument("--speed", type=float, default=6.0, help="how much faster than real time the live runs send")
    p.add_argument(
        "--parallel", type=int, default=1, help="conversations streamed at once (live runs at --speed 1 take long)"
    )
    p.add_argument("--no-latency", action="store_true", help="skip finals' latency at 6 streams")
    p.add_argument("--label", default="")
    p.add_argument("--cost", action="store_true", help="only finals' latency, diarization off and on alternating")
    p.add_argument("--stagger", type=float, default=0.0, help="with --cost: seconds between the clients' starts")
    args = p.parse_args()
    if args.cost:
        return cost(args.stagger)
    refs, audio = load_set()
    encoder = VoiceEncoder.load(weights_path())
    print("embedding the set's %d utterances ..." % len(audio), flush=True)
    started = time.process_time()
    embeddings = np.stack([encoder.embed(a) for a in audio.values()])
    cpu_per_s = (time.process_time() - started) / (sum(len(a) for a in audio.values()) / 16000)
    set_eer = eer(embeddings, [refs[n]["speaker"] for n in audio])
    print("EER %.2f%%, encoder CPU %.4f s per audio s" % (100 * set_eer, cpu_per_s), flush=True)
    convs = conversations(refs, args.per_size)
    rows: list[dict[str, Any]] = []
    latency: dict[str, dict[str, float | None]] = {}
    # Faster than real time cuts utterances differently: the endpointer goes by the audio, and
    # the words it weighs (interims, speculative finals) come by the clock, so fewer arrive in
    # a pause. A session without interims (Deepgram's default) feels that most: its labels are
    # representative at --speed 1 only.
    with Service({"MODEL_NAME": "tiny.en", "AUDIO_RATE_MAX": str(args.speed + 1)}) as (url, _pid):
        rendered = [render(conv, audio) for conv in convs]
        live: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        for first in range(0, len(convs), args.parallel):
            pcms = [float32_to_pcm16(mix) for mix, _ in rendered[first : first + args.parallel]]
            print("streaming conversations %d-%d live ..." % (first + 1, first + len(pcms)), flush=True)
            live += asyncio.run(live_batch(url, pcms, args.speed))
        for i, conv in enumerate(convs):
            mix, spans = rendered[i]
            natives, deepgrams = live[i]
            right, turns, used = score(spans, natives)
            dg_right, _, dg_used = score(spans, deepgrams)
            segments = transcribe_file(url.replace("ws://", "http://").replace("/v1/listen", ""), float32_to_pcm16(mix))
            f_right, _, f_used = score(spans, segments)
            errors = der(spans, segments)
            rows.append(
                {
                    "size": conv["size"],
                    "mixed": conv["mixed"],
                    "right": right,
                    "turns": turns,
                    "labels": used,
                    "deepgram_right": dg_right,
                    "deepgram_labels": dg_used,
                    "file_right": f_right,
                    "file_labels": f_used,
                    **{"file_" + k: v for k, v in errors.items()},
                }
            )
            print(
                "conversation %d/%d (%d speakers): live %d/%d turns right, %d labels; Deepgram %d/%d, %d labels; "
                "file %d/%d, %d labels, DER %.1f%%"
                % (
                    i + 1,
                    len(convs),
                    conv["size"],
                    *(right, turns, used, dg_right, turns, dg_used, f_right, turns, f_used),
                    100 * errors["der"],
                ),
                flush=True,
            )
        mix, spans = rendered[0]
        pcm = float32_to_pcm16(mix)
        for diarize in () if args.no_latency else (False, True):
            print("6 streams in real time, diarize %s ..." % diarize, flush=True)
            results = asyncio.run(_six(url, pcm, diarize))
            lat = []
            for got in results:
                for at, m in got:
                    ends = [e for s, e, _ in spans if abs(e - m["end"]) < 1.0]
                    if ends:
                        lat.append(at - ends[0])
            latency["on" if diarize else "off"] = {"p50_ms": pct(lat, 50, 1000), "p95_ms": pct(lat, 95, 1000)}
            print("  %s" % latency["on" if diarize else "off"], flush=True)
    summary: dict[str, Any] = {"eer_pct": round(100 * set_eer, 2), "encoder_cpu_s_per_audio_s": round(cpu_per_s, 4)}
    for size in (2, 3, 4, "all"):
        some = [r for r in rows if size == "all" or r["size"] == size]
        summary[str(size)] = {
            "turns_right_pct": round(100 * sum(r["right"] for r in some) / sum(r["turns"] for r in some), 1),
            "count_right_pct": round(100 * float(np.mean([r["labels"] == r["size"] for r in some])), 1),
            "deepgram_turns_right_pct": round(
                100 * sum(r["deepgram_right"] for r in some) / sum(r["turns"] for r in some), 1
            ),
            "deepgram_count_right_pct": round(
                100 * float(np.mean([r["deepgram_labels"] == r["size"] for r in some])), 1
            ),
            "file_turns_right_pct": round(100 * sum(r["file_right"] for r in some) / sum(r["turns"] for r in some), 1),
            "file_count_right_pct": round(100 * float(np.mean([r["file_labels"] == r["size"] for r in some])), 1),
            "file_der_pct": round(
                100
                * sum(r["file_der"] * r["file_speech_frames"] for r in some)
                / sum(r["file_speech_frames"] for r in some),
                1,
            ),
            "file_confusion_pct": round(
                100
                * sum(r["file_confusion"] * r["file_speech_frames"] for r in some)
                / sum(r["file_speech_frames"] for r in some),
                1,
            ),
            "conversations": len(some),
        }
    summary["finals_6_streams"] = latency
    print(json.dumps(summary, indent=1))
    out = ROOT / "benchmarks" / "results" / ("diarization%s.json" % ("-" + args.label if args.label else ""))
    out.write_text(json.dumps({"summary": summary, "rows": rows, "when": time.strftime("%Y-%m-%d")}, indent=1))
    print("wrote", out.relative_to(ROOT))
    return 0


def cost(stagger_s: float = 0.0) -> int:
    """6 real-time clients on a 4-turn two-speaker conversation, diarization off, on, off, on
    (started `stagger_s` apart: at 0 their turns end together, a burst that saturates two cores)."""
    from common.audio import float32_to_pcm16
    from stt.bench import Service

    refs, audio = load_set()
    conv = conversations(refs, 8)[0]
    mix, spans = render({**conv, "turns": conv["turns"][:4], "gaps": [1.5] * 4}, audio)
    pcm = float32_to_pcm16(mix)
    print("6 streams of a %.0f s conversation, diarization off and on, twice" % (len(mix) / 16000), flush=True)
    lat: dict[str, list[float]] = {"off": [], "on": []}
    with Service({"MODEL_NAME": "tiny.en"}) as (url, _pid):
        for diarize in (False, True, False, True):
            got = [x for run in asyncio.run(_six(url, pcm, diarize, stagger_s)) for x in run]
            ends = [e for _, e, _ in spans]
            these = [at - min(ends, key=lambda e: abs(e - m["end"])) for at, m in got]
            lat["on" if diarize else "off"] += these
            print(
                "  diarize %s: p50 %s ms, p95 %s ms" % (diarize, pct(these, 50, 1000), pct(these, 95, 1000)), flush=True
            )
    summary = {k: {"p50_ms": pct(v, 50, 1000), "p95_ms": pct(v, 95, 1000), "finals": len(v)} for k, v in lat.items()}
    print(json.dumps(summary))
    out = ROOT / "benchmarks" / "results" / ("diarization-cost%s.json" % ("-staggered" if stagger_s else ""))
    out.write_text(json.dumps({"summary": summary, "when": time.strftime("%Y-%m-%d")}, indent=1))
    print("wrote", out.relative_to(ROOT))
    return 0


async def _six(url: str, pcm: bytes, diarize: bool, stagger_s: float = 0.0) -> list[list[tuple[float, dict[str, Any]]]]:
    async def one(i: int) -> list[tuple[float, dict[str, Any]]]:
        await asyncio.sleep(i * stagger_s)
        return await stream(url, pcm, 1.0, diarize)

    return list(await asyncio.gather(*(one(i) for i in range(6))))


if __name__ == "__main__":
    raise SystemExit(main())
