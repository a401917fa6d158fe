"""A transcribed file in OpenAI's response formats: json, text, srt, vtt, verbose_json.

Segments follow the speech: each part's timestamped Whisper segments (decoder/engine.py), each
with its own start and end, and a segment longer than a subtitle reader can take in (about 7 s,
or two lines of 42 characters) is cut into cues at word boundaries, at a sentence or clause end
where one falls late enough, timed by its words where the decoder gave word times, else in
proportion to its characters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import Response
from fastapi.responses import JSONResponse, PlainTextResponse

from gateway.core.speakers import SAME, label_all
from gateway.files.split import BYTES_PER_S
from gateway.files.upload import FileTranscription

CUE_MAX_S = 7.0
CUE_MAX_CHARS = 84  # two lines of 42
BREAK_AFTER = tuple(".?!,;:")


def render(job: FileTranscription, fmt: str) -> Response:
    whole = file_segments(job)
    if job.diarize:
        labels = label_all([s.get("voice") for s in whole], [s["end"] - s["start"] for s in whole])
        names = known_names(whole, labels, job.reference_voices())
        for s, n in zip(whole, labels):
            s["speaker"] = names.get(n, speaker_name(n)) if n is not None else None
    segments = readable(whole)
    text = " ".join(s["text"] for s in segments)
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt == "diarized_json":
        return JSONResponse(
            {
                "text": text,
                "duration": round(job.duration_s, 3),
                "segments": [
                    {
                        "type": "transcript.text.segment",
                        "id": "seg_%d" % i,
                        "start": s["start"],
                        "end": s["end"],
                        "speaker": s.get("speaker"),
                        "text": s["text"],
                    }
                    for i, s in enumerate(segments)
                ],
                "usage": {"type": "duration", "seconds": round(job.duration_s, 3)},
            }
        )
    if fmt == "srt":
        return PlainTextResponse(subtitles(segments, ","), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse("WEBVTT\n\n" + subtitles(segments, "."), media_type="text/vtt")
    if fmt == "json":
        return JSONResponse({"text": text})
    language = next((r.language for r in job.results.values() if r.language), job.lang or "en")
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language,
        "duration": round(job.duration_s, 3),
        "text": text,
        "segments": [
            {
                "id": i,
                "seek": 0,
                "start": s["start"],
                "end": s["end"],
                "text": s["text"],
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
                **({"speaker": s.get("speaker")} if job.diarize else {}),
            }
            for i, s in enumerate(segments)
        ],
    }
    if job.words:
        body["words"] = [
            {"word": w["word"].strip(), "start": w["start"], "end": w["end"]} for s in segments for w in s["words"]
        ]
    return JSONResponse(body)


def file_segments(job: FileTranscription) -> list[dict[str, Any]]:
    """Every part's segments in file order (a part decoded without them is one segment)."""
    out: list[dict[str, Any]] = []
    for n, (start, end) in enumerate(job.parts):
        r = job.results[n]
        if r.segments:
            out += [
                {
                    "start": s["start"],
                    "end": s["end"],
                    "text": s["text"].strip(),
                    "words": s.get("words") or [],
                    "voice": s.get("voice"),
                }
                for s in r.segments
                if s.get("text", "").strip()
            ]
        elif r.text.strip():
            out.append(
                {
                    "start": round(start / BYTES_PER_S, 3),
                    "end": round(end / BYTES_PER_S, 3),
                    "text": r.text.strip(),
                    "words": r.words or [],
                    "voice": r.voice,
                }
            )
    return out


def readable(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [cue for s in segments for cue in cues_of(s)]


def cues_of(segment: dict[str, Any]) -> list[dict[str, Any]]:
    """One segment as cues of at most CUE_MAX_S and CUE_MAX_CHARS (a single word longer than
    that stays whole)."""
    start, end, text = segment["start"], segment["end"], segment["text"]
    if end - start <= CUE_MAX_S and len(text) <= CUE_MAX_CHARS:
        return [segment]
    words = segment.get("words") or []
    tokens = [w["word"].strip() for w in words] if words else text.split()
    if words and " ".join(tokens).replace(" ", "") != text.replace(" ", ""):
        words, tokens = [], text.split()  # the word times do not spell the text: go by characters
    if not tokens:
        return [segment]
    # Each token's span: its word's times, or its share of the segment by characters.
    if words:
        spans = [(w["start"], w["end"]) for w in words]
    else:
        total = sum(len(t) + 1 for t in tokens)
        spans, pos = [], 0
        for t in tokens:
            a = start + (end - start) * pos / total
            pos += len(t) + 1
            spans.append((a, start + (end - start) * pos / total))
    cues: list[dict[str, Any]] = []
    first = 0
    while first < len(tokens):
        last = first  # the cue is tokens[first:last + 1]
        best = first
        while last + 1 < len(tokens):
            nxt = last + 1
            chars = len(" ".join(tokens[first : nxt + 1]))
            if chars > CUE_MAX_CHARS or spans[nxt][1] - spans[first][0] > CUE_MAX_S:
                break
            last = nxt
            if tokens[last].endswith(BREAK_AFTER):
                best = last
        if last + 1 < len(tokens) and best > first and (best - first) * 2 >= last - first:
            last = best  # end the cue where the sentence or clause ends, if that is not too early
        cue_words = words[first : last + 1] if words else []
        cues.append(
            {
                "start": round(spans[first][0] if first else start, 3),
                "end": round(spans[last][1] if last + 1 < len(tokens) else end, 3),
                "text": " ".join(tokens[first : last + 1]),
                "words": cue_words,
                "speaker": segment.get("speaker"),
            }
        )
        first = last + 1
    return cues


def timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    return "%02d:%02d:%02d%s%03d" % (ms // 3_600_000, ms // 60_000 % 60, ms // 1000 % 60, sep, ms % 1000)


def subtitles(segments: list[dict[str, Any]], sep: str) -> str:
    """SRT (sep ",", numbered cues) or the body of WebVTT (sep "."); a labelled speaker leads
    its cue ("A: " in SRT, a voice tag "<v A>" in WebVTT)."""
    cues = []
    for i, s in enumerate(segments, 1):
        head = "%d\n" % i if sep == "," else ""
        who = s.get("speaker")
        text = s["text"] if not who else ("%s: %s" % (who, s["text"]) if sep == "," else "<v %s>%s" % (who, s["text"]))
        cues.append("%s%s --> %s\n%s\n" % (head, timestamp(s["start"], sep), timestamp(s["end"], sep), text))
    return "\n".join(cues)


def known_names(
    segments: list[dict[str, Any]], labels: list[int | None], references: list[tuple[str, np.ndarray]]
) -> dict[int, str]:
    """The speakers that sound like a known speaker's clip (cosine SAME or above), by its name:
    the closest pairs first, each name and each speaker taken once."""
    voices: dict[int, list[np.ndarray]] = {}
    for s, n in zip(segments, labels):
        if n is not None and s.get("voice"):
            voices.setdefault(n, []).append(np.asarray(s["voice"], dtype=np.float32))
    pairs = []
    for n, vs in voices.items():
        centroid = np.mean(vs, axis=0)
        centroid = centroid / max(float(np.linalg.norm(centroid)), 1e-12)
        for name, ref in references:
            pairs.append((float(centroid @ (ref / max(float(np.linalg.norm(ref)), 1e-12))), n, name))
    names: dict[int, str] = {}
    for sim, n, name in sorted(pairs, reverse=True):
        if sim >= SAME and n not in names and name not in names.values():
            names[n] = name
    return names


def speaker_name(n: int) -> str:
    """A file's speakers as OpenAI labels them: A, B, ..., Z, then AA, AB, ..."""
    return chr(ord("A") + n) if n < 26 else speaker_name(n // 26 - 1) + chr(ord("A") + n % 26)
