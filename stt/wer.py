"""Word error rate as the field scores it: both texts normalized by Whisper's English normalizer
(`whisper-normalizer`'s `EnglishTextNormalizer`, what the Open ASR leaderboard uses), then
aligned by `jiwer`. The alignment also says, for every reference word, whether it was hit,
substituted or deleted, and where insertions fell, so a long recording's errors can be
attributed to its sentences.

These are the benchmarks' and the tests' tools (the `bench` and `test` extras), not the
service's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any


@functools.cache
def _normalizer() -> Any:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> list[str]:
    """The words of `text` as scored: lower case, punctuation dropped, spellings standardized,
    numbers as digits ("seventh" and "7th" alike)."""
    words: list[str] = _normalizer()(text).split()
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
    """`reference` and `hypothesis` as text (normalized here) or as normalized words."""
    import jiwer

    ref = normalize(reference) if isinstance(reference, str) else reference
    hyp = normalize(hypothesis) if isinstance(hypothesis, str) else hypothesis
    out = Alignment(ref, hyp, ops=[""] * len(ref), inserted=[0] * max(len(ref), 1), hyp_ref=[0] * len(hyp))
    if not ref:  # jiwer takes no empty reference: every word said is an insertion
        out.inserted[0] = len(hyp)
        return out
    if not hyp:
        out.ops = ["del"] * len(ref)
        return out
    words = jiwer.process_words(" ".join(ref), " ".join(hyp))
    for chunk in words.alignments[0]:
        r0, r1, h0, h1 = chunk.ref_start_idx, chunk.ref_end_idx, chunk.hyp_start_idx, chunk.hyp_end_idx
        if chunk.type in ("equal", "substitute"):
            op = "ok" if chunk.type == "equal" else "sub"
            for k in range(r1 - r0):
                out.ops[r0 + k] = op
                out.hyp_ref[h0 + k] = r0 + k
        elif chunk.type == "delete":
            out.ops[r0:r1] = ["del"] * (r1 - r0)
        else:  # insert: against the reference word it follows
            at = max(0, r0 - 1)
            out.inserted[at] += h1 - h0
            out.hyp_ref[h0:h1] = [at] * (h1 - h0)
    return out


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` (0.0 is word for word)."""
    return align(reference, hypothesis).wer
