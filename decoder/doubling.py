"""A final that says its whole text twice, or more words than its audio can hold.

Whisper, given audio cut close to the end of a sentence, sometimes writes the sentence twice:
tiny.en on the recorded "Concord returned to its place amidst the tents", cut every 30 ms
from 3.50 to 4.37 s of its session, doubled it at 10 of 30 cuts, although the audio holds it
once (and "Ask what you can do for your country." came back twice the same way). The loop
guard (decoder/text.py) needs three turns, and two copies do not reach the compression-ratio
threshold.

What is done: the final is decoded again with a little more of its utterance's audio (what the
key holds after the job's range: trailing silence, up to LOOKAHEAD_S); the cuts that double
mostly decode once when moved. If the text still says itself twice, or there is no more audio,
one copy is kept: a person who really said the same 3+ words twice in a row, within one
utterance, loses the repeat, against every hallucinated copy removed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

logger = logging.getLogger(__name__)

LOOKAHEAD_S = 0.3  # more audio a doubled final is decoded again with
MIN_UNIT_WORDS = 3  # "no no", "thank you thank you" are said twice for real
MAX_WORDS_PER_S = 7.0  # faster than anyone speaks: more words than the audio can hold
_NOT_WORD = re.compile(r"[^\w']+")


class Decoded(Protocol):
    text: str
    words: list[dict[str, Any]] | None
    no_speech: bool
    audio_s: float
    decode_ms: float


D = TypeVar("D", bound=Decoded)


def _norm(word: str) -> str:
    return _NOT_WORD.sub("", word.lower())


def one_copy(text: str) -> str | None:
    """The first copy when `text` is one phrase of MIN_UNIT_WORDS or more said twice (or more
    times) in a row and nothing else; None otherwise."""
    words = text.split()
    norm = [_norm(w) for w in words]
    n = len(norm)
    for period in range(MIN_UNIT_WORDS, n // 2 + 1):
        if n % period == 0 and all(norm[i] == norm[i % period] for i in range(period, n)):
            return " ".join(words[:period])
    return None


def too_many_words(text: str, audio_s: float) -> bool:
    return len(text.split()) > 1 + MAX_WORDS_PER_S * audio_s


def suspect(out: Decoded) -> bool:
    return bool(out.text) and (one_copy(out.text) is not None or too_many_words(out.text, out.audio_s))


def settle(out: D, again: Callable[[], D | None]) -> D:
    """`out` if it is not suspect; else the decode with more audio (`again()`, None when there is
    no more) if that one is not and says something, else one copy of `out`."""
    if not suspect(out):
        return out
    retry = again()
    if retry is not None:
        retry.decode_ms += out.decode_ms
        # An empty retry (its temperature fallback sampled its way to "no speech": seen on a
        # recorded cut, one run in three) would lose the sentence: one copy of `out` instead.
        if not suspect(retry) and retry.text.strip():
            logger.info("a final said %r; decoded again with more audio: %r", out.text[:80], retry.text[:80])
            return retry
    kept = one_copy(out.text)
    if kept is None:
        return out  # too many words, but not a copy of itself: nothing better to say
    logger.info("a final said its text twice: one copy kept (%r)", kept[:80])
    out.text = kept
    if out.words:
        out.words = first_words(out.words, len(kept.split()))
    return out


def first_words(words: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The timed words of a text's first `n` space-separated words (a piece of a word without a
    leading space belongs to the word before it)."""
    out: list[dict[str, Any]] = []
    count = 0
    for w in words:
        if not out or str(w.get("word", ""))[:1].isspace():
            count += 1
        if count > n:
            break
        out.append(w)
    return out
