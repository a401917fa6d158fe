"""WER as the field scores it (Whisper's English normalizer, jiwer's alignment), and errors
attributed to the reference words they concern."""

from __future__ import annotations

import jiwer

from stt.wer import align, normalize, wer


def test_normalization_is_whispers_english_normalizer() -> None:
    assert normalize("It's 25 past-three, Mr. Smith! 1,200 colour") == [
        "it",
        "is",
        "25",
        "past",
        "3",
        "mister",
        "smith",
        "1200",
        "color",
    ]
    assert normalize("THE SEVENTH CHAPTER") == normalize("The 7th chapter.")
    assert wer("The quick brown fox.", "the Quick, brown fox") == 0.0


def test_the_rate_is_jiwers() -> None:
    ref, hyp = "the quick brown fox jumps over the dog", "a quick brown fox jumped over dog today"
    assert wer(ref, hyp) == jiwer.wer(" ".join(normalize(ref)), " ".join(normalize(hyp)))


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
