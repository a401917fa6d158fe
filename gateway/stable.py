"""The stable prefix of an utterance's interims.

The stable prefix is the longest common prefix of the last two interim texts, cut back to a
word boundary, and never shorter than the previous stable prefix. The gateway sends it with the
next interim job as the decoder's forced prefix, so every later interim starts with it.
"""

from __future__ import annotations


def common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def cut_to_word(text: str, full: str) -> str:
    """`text` is a prefix of `full`: keep it only up to the end of its last whole word."""
    if len(text) == len(full) or (len(text) < len(full) and full[len(text)].isspace()):
        return text.rstrip()
    space = text.rfind(" ")
    return text[:space].rstrip() if space > 0 else ""


def stable_prefix(texts: list[str], previous: str) -> str:
    if len(texts) < 2:
        return previous
    a, b = texts[-2], texts[-1]
    candidate = cut_to_word(common_prefix(a, b), b)
    if len(candidate) > len(previous) and candidate.startswith(previous):
        return candidate
    return previous
