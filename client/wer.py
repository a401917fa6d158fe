"""Word error rate against a known text: normalization, alignment, per-reference-word errors.

Whisper writes numbers as digits, adds punctuation and casing; the texts we compare against
are plain sentences. Both sides are normalized the same way (lower case, punctuation dropped,
hyphens split, numbers below a million spelled out) before words are aligned by edit distance.
The alignment says, for every reference word, whether it was hit, substituted or deleted, and
where insertions fell, so a long recording's errors can be attributed to its sentences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_PUNCT = re.compile(r"[^\w\s']")


def number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    rest = n % 1000
    return number_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_words(rest))


def normalize(text: str) -> list[str]:
    """Words of `text`, compared case- and punctuation-free."""
    text = text.lower().replace("-", " ").replace("\u2019", "'")
    text = re.sub(r"(\d),(\d{3})", r"\1\2", text)
    text = _PUNCT.sub(" ", text)
    words: list[str] = []
    for word in text.split():
        word = word.strip("'")
        if not word:
            continue
        if word.isdigit() and len(word) < 7:
            words.extend(number_words(int(word)).split())
        else:
            words.append(word)
    return words


@dataclass
class Alignment:
    """Edit-distance alignment of hypothesis words to reference words."""

    ref: list[str]
    hyp: list[str]
    # Per reference word: "ok", "sub" or "del"; insertions are counted against the reference word
    # they follow (or the first one).
    ops: list[str] = field(default_factory=list)
    inserted: list[int] = field(default_factory=list)
    # Per hypothesis word: the reference word it stands for or follows (its sentence's words).
    hyp_ref: list[int] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(op != "ok" for op in self.ops) + sum(self.inserted)

    @property
    def wer(self) -> float:
        return self.errors / max(1, len(self.ref))

    def errors_in(self, start: int, end: int) -> int:
        """Errors attributed to reference words [start, end)."""
        return sum(op != "ok" for op in self.ops[start:end]) + sum(self.inserted[start:end])

    def hyp_in(self, start: int, end: int) -> str:
        """The hypothesis words aligned to reference words [start, end)."""
        return " ".join(w for w, r in zip(self.hyp, self.hyp_ref) if start <= r < end)


def align(reference: str | list[str], hypothesis: str | list[str]) -> Alignment:
    ref = normalize(reference) if isinstance(reference, str) else reference
    hyp = normalize(hypothesis) if isinstance(hypothesis, str) else hypothesis
    n, m = len(ref), len(hyp)
    # cost[i][j]: edits to turn hyp[:j] into ref[:i]
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0] = i
    for j in range(1, m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        row, prev, r = cost[i], cost[i - 1], ref[i - 1]
        for j in range(1, m + 1):
            row[j] = min(prev[j - 1] + (r != hyp[j - 1]), prev[j] + 1, row[j - 1] + 1)
    out = Alignment(ref, hyp, ops=[""] * n, inserted=[0] * max(n, 1), hyp_ref=[0] * m)
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            out.ops[i - 1] = "ok" if ref[i - 1] == hyp[j - 1] else "sub"
            out.hyp_ref[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            out.ops[i - 1] = "del"
            i -= 1
        else:
            out.inserted[max(0, i - 1)] += 1
            out.hyp_ref[j - 1] = max(0, i - 1)
            j -= 1
    if n == 0:
        out.ops = []
    return out


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` (0.0 is word for word)."""
    return align(reference, hypothesis).wer
