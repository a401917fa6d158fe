"""The text of interims and their stable prefix.

An interim decodes an utterance that is still going on, and Whisper ends such a text as if the
speech had stopped there: a period, "...". Those marks say nothing about the speech, so an
interim's text drops them at its end (the final has the real punctuation).

The stable prefix is the longest common prefix of the last two interim texts, cut back to a
word boundary (without the punctuation at its end, which a later word may change: forced on the
decoder, "fox." would make "fox. Jumps"), and never shorter than the previous stable prefix.
The gateway sends it with the next interim job as the decoder's forced prefix, so every later
interim starts with it.
"""

from __future__ import annotations

import re

# Sentence marks and ellipses at the end of an interim, and the spaces around them.
_TRAILING = re.compile(r"[\s.!?;:,…。！？-]+$")


def interim_text(text: str) -> str:
    """What an interim shows: the decoded text without the marks Whisper puts at its cut end."""
    return _TRAILING.sub("", text.strip())


def common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def cut_to_word(text: str, full: str) -> str:
    """`text` is a prefix of `full`: keep it only up to the end of its last whole word, without
    the punctuation that ends that word."""
    if not (len(text) == len(full) or (len(text) < len(full) and full[len(text)].isspace())):
        space = text.rfind(" ")
        text = text[:space] if space > 0 else ""
    return _TRAILING.sub("", text.rstrip())


def stable_prefix(texts: list[str], previous: str) -> str:
    if len(texts) < 2:
        return previous
    a, b = texts[-2], texts[-1]
    candidate = cut_to_word(common_prefix(a, b), b)
    if len(candidate) > len(previous) and candidate.startswith(previous):
        return candidate
    return previous
