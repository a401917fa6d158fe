"""WER: normalization, alignment, and errors attributed to the reference words they concern."""

from __future__ import annotations

from client.wer import align, normalize, wer


def test_normalization_ignores_case_punctuation_and_digits() -> None:
    assert normalize("It's 25 past-three, Mr. Smith! 1,200") == [
        "it's",
        "twenty",
        "five",
        "past",
        "three",
        "mr",
        "smith",
        "one",
        "thousand",
        "two",
        "hundred",
    ]
    assert wer("The quick brown fox.", "the Quick, brown fox") == 0.0


def test_substitutions_deletions_and_insertions_each_count_once() -> None:
    a = align("the quick brown fox jumps", "the quick fox jumps over it")
    assert a.ops == ["ok", "ok", "del", "ok", "ok"] and a.inserted == [0, 0, 0, 0, 2]
    assert a.errors == 3 and a.wer == 0.6  # brown deleted, "over it" inserted
    assert a.errors_in(0, 2) == 0 and a.errors_in(2, 5) == 3
    assert a.hyp_in(3, 5) == "fox jumps over it"
    assert align("a b c", "a x c").ops == ["ok", "sub", "ok"]


def test_empty_sides() -> None:
    assert wer("", "") == 0.0
    assert wer("two words", "") == 1.0
    assert align("", "something said").errors == 2
