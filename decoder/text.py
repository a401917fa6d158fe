"""What becomes of a decode's text: runaway segments dropped, loops cut, the forced context
taken off again, and the word timings of the context skipped."""

from __future__ import annotations

import difflib
import logging
import re
from typing import Any

from common.settings import DecoderSettings
from decoder import profiles

logger = logging.getLogger(__name__)

_NOT_WORD = re.compile(r"[^\w']+")
# A phrase said this many times in a row up to the end of the text is the model looping, not
# speech ("See you tomorrow. See you tomorrow. See you ..."); a single word needs more.
LOOP_REPEATS = 3
LOOP_REPEATS_ONE_WORD = 6
# What Whisper writes for music, tones and noise (its training data's captions), lower-cased,
# without punctuation.
NONSPEECH_PHRASES = frozenset(
    {"thank you", "thanks for watching", "thank you for watching", "woohoo", "you", "bye", "music"}
)


def drop_runaway_segments(segments: list[Any], settings: DecoderSettings) -> tuple[str, list[Any]]:
    """Hallucination guards on top of faster-whisper's own (which drops a window whose no-speech
    probability is above NO_SPEECH_THRESHOLD *and* whose log-probability is below
    LOG_PROB_THRESHOLD): a segment still too repetitive after every fallback temperature is not
    speech; nor is one the model itself finds likely silence (above HALLUCINATION_NO_SPEECH)
    while not sure of its words either (below HALLUCINATION_LOG_PROB), which is what music and
    tones decode to ("Thank you.", "Woohoo!"), and for the phrases Whisper is known to write
    for sound that is not speech the same holds from NO_SPEECH_THRESHOLD up (how sure of silence
    it is there varies with the CPU's kernels: 0.68-0.75 on one machine, over 0.75 on another;
    a person saying "Thank you." is decoded with confidence and kept); nor is text with no word
    in it ("." or "♪")."""
    kept = [
        s
        for s in segments
        if not (
            settings.COMPRESSION_RATIO_THRESHOLD
            and s.compression_ratio > settings.COMPRESSION_RATIO_THRESHOLD
            and s.temperature >= profiles.FALLBACK_TEMPERATURES[-1]
        )
        and not (
            s.no_speech_prob > settings.HALLUCINATION_NO_SPEECH and s.avg_logprob < settings.HALLUCINATION_LOG_PROB
        )
        and not (
            s.no_speech_prob > settings.NO_SPEECH_THRESHOLD
            and s.avg_logprob < settings.HALLUCINATION_LOG_PROB
            and " ".join(_words(s.text)) in NONSPEECH_PHRASES
        )
        and _WORD.search(s.text)
    ]
    return "".join(s.text for s in kept).strip(), kept


_WORD = re.compile(r"\w")
REPEAT_SIMILARITY = 0.6
ECHO_WORDS = 6
# Slower than anyone speaks over a whole utterance. After a context or prompt that ends a
# sentence the model may end the transcript at the new audio's first full stop: "Chapter 34."
# of 5.9 s that say "Chapter thirty four. Unc Billy and old Missus Possum".
MIN_WORDS_PER_S = 0.8


def _words(text: str) -> list[str]:
    return _NOT_WORD.sub(" ", text.lower()).split()


def echoes(text: str, before: str) -> bool:
    """Whether the decoded `text` says again what came `before` it (a forced context, or the
    prompt's recent finals) rather than new speech: the whole of it sounds like the end of what
    came before, or it begins with the last two or more words of it."""
    said, prev = _words(text), _words(before)
    if not said or not prev:
        return False
    tail = prev[-(len(said) + 2) :]
    if difflib.SequenceMatcher(None, " ".join(said), " ".join(tail)).ratio() >= REPEAT_SIMILARITY:
        return True
    longest = min(len(prev), len(said), ECHO_WORDS)
    if any(said[:k] == prev[-k:] for k in range(longest, 1, -1)):
        return True
    # A short context said again from its start ("Chapter 7. Parry." then "Chapter 7. ...").
    return 2 <= len(prev) <= ECHO_WORDS and said[:2] == prev[:2]


def word_count(text: str) -> int:
    return len(_words(text))


def stops_short(text: str, audio_s: float) -> bool:
    """Whether `text` holds too few words for `audio_s` seconds of an utterance's audio (its
    pre-roll and trailing silence included): fewer than MIN_WORDS_PER_S over all but a second."""
    return word_count(text) < MIN_WORDS_PER_S * (audio_s - 1.0)


def loop_start(words: list[str]) -> int | None:
    """How many words to keep when the text ends in a loop: the words before the loop and one
    turn of it (a unit repeated to the end, the last turn possibly cut off by the token budget).
    None when there is no loop."""
    norm = [_NOT_WORD.sub("", w.lower()) for w in words]
    n = len(norm)
    for start in range(n):
        rest = n - start
        for period in range(1, rest // LOOP_REPEATS + 1):
            if period == 1 and rest < LOOP_REPEATS_ONE_WORD:
                continue
            if all(norm[start + i] == norm[start + i % period] for i in range(period, rest)):
                return start + period
    return None


def cut_loop(text: str) -> str:
    """The text without the repeats of a loop at its end. A greedy decode in a short encoder
    window sometimes never says end-of-text and repeats itself up to the token budget."""
    words = text.split()
    keep = loop_start(words)
    if keep is None:
        return text
    logger.debug("cut a loop: %r", text[-80:])
    return " ".join(words[:keep])


def strip_context(text: str, context: str) -> str:
    """The decoded text after the forced context text (which the model was made to repeat), less
    the punctuation that closes the context's last sentence ("punch" + ". See you")."""
    if not text.startswith(context):
        logger.warning("decoded text does not start with its forced context %r: %r", context[-40:], text[:80])
    return text[len(context) :].lstrip(" .,;:!?。，").strip()


def drop_context_words(words: list[Any], context: str) -> list[Any]:
    """Word timings cover the forced context too: skip the words that spell it."""
    if not context:
        return words
    spelled, n = 0, 0
    while n < len(words) and spelled + len(words[n].word.strip()) <= len(context.replace(" ", "")):
        spelled += len(words[n].word.strip())
        n += 1
    return words[n:]


def first_words(words: list[Any], n: int) -> list[Any]:
    """The word timings of the text's first `n` space-separated words (a loop cut from the text
    is cut from its words too). Whisper times pieces of a word apart ("round", "-fox"): a piece
    without a leading space is part of the word before it."""
    out: list[Any] = []
    count = 0
    for w in words:
        if not out or w.word[:1].isspace():
            count += 1
        if count > n:
            break
        out.append(w)
    return out
