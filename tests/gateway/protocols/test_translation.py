"""The pure parts of the OpenAI and Deepgram adapters: formats, turn detection, words."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.datastructures import QueryParams

from gateway.core.options import BadInput, EotRule, Turn, check_end_of_turn
from gateway.protocols.deepgram_query import keyterms, language, speaks_deepgram, spoken_words, spread
from gateway.protocols.flux_config import Thresholds, parse_thresholds
from gateway.protocols.openai_config import parse_eot, parse_format, parse_turn


def test_openai_formats() -> None:
    assert parse_format({"type": "audio/pcm", "rate": 24000}, beta=False) == ("audio/pcm", 24000)
    assert parse_format({"type": "audio/pcmu"}, beta=False) == ("audio/pcmu", 8000)
    assert parse_format("g711_alaw", beta=True) == ("audio/pcma", 8000)
    assert parse_format("pcm16", beta=True) == ("audio/pcm", 24000)
    for fmt, beta in (({"type": "audio/opus"}, False), ("mp3", True), ({"type": "audio/pcm", "rate": 1000}, False)):
        with pytest.raises(BadInput):
            parse_format(fmt, beta)


def test_openai_turn_detection() -> None:
    assert parse_turn(None, 300) == Turn(0, 0, 300, on_silence=False)
    assert parse_turn({"type": "server_vad", "silence_duration_ms": 900, "prefix_padding_ms": 100}, 300) == Turn(
        900, 900, 100
    )
    assert parse_turn({"type": "semantic_vad"}, 300) is None  # the service's adaptive endpointer
    assert parse_turn({"type": "semantic_vad", "eagerness": "high"}, 300) == Turn(250, 450, 300, eager_ms=150)
    bad: Any
    for bad in (
        {"type": "vad"},
        {"type": "server_vad", "silence_duration_ms": "x"},
        [],
        {"type": "semantic_vad", "eagerness": "x"},
    ):
        with pytest.raises(BadInput) as err:
            parse_turn(bad, 300)
        assert err.value.code == "invalid_turn_detection"


def test_semantic_vad_is_the_end_of_turn_model_with_eagerness_as_its_threshold() -> None:
    assert parse_eot({"type": "semantic_vad"}) == EotRule(0.6, timeout_ms=4000)
    assert parse_eot({"type": "semantic_vad", "eagerness": "low"}) == EotRule(0.8, timeout_ms=8000)
    assert parse_eot({"type": "semantic_vad", "eagerness": "high"}) == EotRule(0.4, timeout_ms=2000)
    assert parse_eot({"type": "server_vad", "silence_duration_ms": 500}) is None
    assert parse_eot(None) is None


def test_native_start_chooses_the_model_or_silence() -> None:
    assert check_end_of_turn({}) is None
    assert check_end_of_turn({"end_of_turn": "silence"}) is None
    assert check_end_of_turn({"end_of_turn": "model", "eot_threshold": 0.8}) == EotRule(0.8, timeout_ms=3000)
    for bad in (
        {"end_of_turn": "maybe"},
        {"end_of_turn": "model", "eot_threshold": 2},
        {"end_of_turn": "model", "eot_timeout_ms": 10},
    ):
        with pytest.raises(BadInput):
            check_end_of_turn(bad)


def test_flux_thresholds_in_their_ranges_and_eager_below_the_end() -> None:
    base = Thresholds()
    assert parse_thresholds({"eot_threshold": "0.8"}, base, fatal=True) == Thresholds(0.8, None, 5000)
    t = parse_thresholds({"eager_eot_threshold": 0.5, "eot_timeout_ms": 900}, base, fatal=False)
    assert t == Thresholds(0.7, 0.5, 900)
    for bad, code in (
        ({"eot_threshold": "0.2"}, "invalid_eot_threshold"),
        ({"eager_eot_threshold": 0.8, "eot_threshold": 0.6}, "invalid_eager_eot_threshold"),
        ({"eot_timeout_ms": "x"}, "invalid_eot_timeout_ms"),
        ({"eot_threshold": True}, "invalid_eot_threshold"),
    ):
        with pytest.raises(BadInput) as err:
            parse_thresholds(bad, base, fatal=False)
        assert err.value.code == code


def test_deepgram_is_told_apart_by_its_query() -> None:
    assert speaks_deepgram(QueryParams("model=nova-3&encoding=linear16"))
    assert not speaks_deepgram(QueryParams("token=abc"))
    assert not speaks_deepgram(QueryParams(""))


def test_deepgram_languages_and_keyterms() -> None:
    assert language(QueryParams("language=en-US")) == "en"
    assert language(QueryParams("language=multi")) is None
    assert keyterms(QueryParams("keyterm=Stella&keyterm=snake%20plant&keywords=Siobhan:2")) == (
        "Stella",
        "snake plant",
        "Siobhan",
    )
    with pytest.raises(BadInput) as err:
        language(QueryParams("language=xx-YY"))
    assert err.value.fatal


def test_whisper_word_pieces_become_deepgram_words() -> None:
    words = [
        {"word": " The", "start": 0.0, "end": 0.2, "prob": 0.9},
        {"word": " round", "start": 0.2, "end": 0.5, "prob": 0.8},
        {"word": "-fox.", "start": 0.5, "end": 0.9, "prob": 0.4},
    ]
    out = spoken_words(words)
    assert [w["punctuated_word"] for w in out] == ["The", "round-fox."]
    assert [w["word"] for w in out] == ["the", "round-fox"]
    assert out[1]["start"] == 0.2 and out[1]["end"] == 0.9 and out[1]["confidence"] == pytest.approx(0.6)


def test_an_interims_words_are_spread_over_its_audio() -> None:
    out = spread("Hello there, world", 1.0, 2.5, 0.7)
    assert [(w["word"], w["start"], w["end"]) for w in out] == [
        ("hello", 1.0, 1.5),
        ("there", 1.5, 2.0),
        ("world", 2.0, 2.5),
    ]
    assert spread("", 0, 1, 0.5) == []
