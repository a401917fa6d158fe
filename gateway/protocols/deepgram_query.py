"""Deepgram's query parameters (and its word lists) as the gateway's own options."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from starlette.datastructures import QueryParams

from gateway.core.options import BadInput, check_keyterms, check_language, excerpt

# Query parameters of Deepgram's live API: a query with any of them speaks Deepgram.
PARAMS = frozenset(
    "model encoding sample_rate channels multichannel interim_results endpointing utterance_end_ms vad_events "
    "punctuate smart_format keyterm keywords language diarize diarize_model numerals profanity_filter redact "
    "replace search tag version filler_words dictation mip_opt_out callback callback_method extra "
    "detect_entities language_hint".split()
)
ENCODINGS = {"linear16": 2, "mulaw": 1, "alaw": 1}  # bytes per sample
IDLE_S = 10.0  # Deepgram closes a stream without audio or KeepAlive after 10 s
MIN_ENDPOINTING_MS = 200  # Whisper needs whole phrases: a shorter silence is not an end here
MAX_CHANNELS = 8
_NOT_WORD = re.compile(r"[^\w'-]+")


def speaks_deepgram(query: Mapping[str, str]) -> bool:
    return any(name in PARAMS for name in query)


def flag(query: QueryParams, name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise BadInput("bad_request", "%s must be true or false, not %s" % (name, excerpt(value)), fatal=True)


def number(query: QueryParams, name: str, lo: int, hi: int) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise BadInput("bad_request", "%s must be an integer, not %s" % (name, excerpt(value)), fatal=True) from None
    if not lo <= n <= hi:
        raise BadInput("bad_request", "%s must be %d-%d, not %d" % (name, lo, hi, n), fatal=True)
    return n


def keyterms(query: QueryParams) -> tuple[str, ...]:
    """`keyterm` (Nova-3: phrases) and `keywords` (Nova-2: `word:boost`, the boost dropped)."""
    terms = query.getlist("keyterm") + [k.rsplit(":", 1)[0] if ":" in k else k for k in query.getlist("keywords")]
    try:
        return check_keyterms(terms, "keyterm")
    except BadInput as exc:
        raise BadInput(exc.code, exc.message, fatal=True) from None


def language(query: QueryParams) -> str | None:
    """Deepgram's BCP-47 tags (`en-US`) as Whisper's codes; `multi` detects."""
    tag = query.get("language")
    if tag is None or tag.lower() == "multi":
        return None
    try:
        return check_language(tag.split("-")[0], "language")
    except BadInput as exc:
        raise BadInput(exc.code, exc.message, fatal=True) from None


def spread(text: str, start: float, end: float, confidence: float) -> list[dict[str, Any]]:
    """An interim's words, without times of their own: spread evenly over its audio."""
    tokens = text.split()
    if not tokens:
        return []
    step = max(0.0, end - start) / len(tokens)
    return [
        {
            "word": _NOT_WORD.sub("", t.lower()),
            "start": round(start + i * step, 3),
            "end": round(start + (i + 1) * step, 3),
            "confidence": round(confidence, 4),
            "punctuated_word": t,
        }
        for i, t in enumerate(tokens)
    ]


def spoken_words(words: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whisper's words (" round", "-fox") as Deepgram's, one per space-separated word of the
    transcript: a piece without a leading space belongs to the word before it."""
    out: list[dict[str, Any]] = []
    probs: list[list[float]] = []
    for w in words:
        text = w["word"]
        if out and text and not text[0].isspace():
            out[-1]["punctuated_word"] += text.strip()
            out[-1]["end"] = w["end"]
            probs[-1].append(w.get("prob", 0.0))
            continue
        out.append({"start": w["start"], "end": w["end"], "punctuated_word": text.strip()})
        probs.append([w.get("prob", 0.0)])
    for word, p in zip(out, probs):
        word["word"] = _NOT_WORD.sub("", word["punctuated_word"].lower())
        word["confidence"] = round(float(np.mean(p)), 4)
    return [w for w in out if w["punctuated_word"]]
