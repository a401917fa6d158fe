"""Interim text and the stable prefix: what an interim shows, and what later interims keep."""

from __future__ import annotations

from gateway.core.stable import cut_to_word, interim_text, stable_prefix


def test_an_interim_drops_the_marks_whisper_puts_where_the_audio_was_cut() -> None:
    assert interim_text(" The quick brown fox.") == "The quick brown fox"
    assert interim_text("and then ...") == "and then"
    assert interim_text("Is it?") == "Is it"
    assert interim_text("Hello. World,") == "Hello. World"
    assert interim_text(" ... ") == ""


def test_the_stable_prefix_is_whole_words_both_interims_share() -> None:
    assert stable_prefix(["The quick brown", "The quick brown fox"], "") == "The quick brown"
    assert stable_prefix(["The quick brow", "The quick brown fox"], "") == "The quick"
    # A word's closing punctuation is not stable: forced on the decoder it would end a sentence.
    assert stable_prefix(["The quick brown fox, jumps", "The quick brown fox, leaps"], "") == "The quick brown fox"
    assert cut_to_word("fox.", "fox. Jumps") == "fox"


def test_the_stable_prefix_never_shrinks_or_changes() -> None:
    assert stable_prefix(["The cat", "A cat sat"], "The") == "The"
    assert stable_prefix(["The quick", "The quick brown"], "The quick") == "The quick"
    assert stable_prefix(["only one"], "") == ""
