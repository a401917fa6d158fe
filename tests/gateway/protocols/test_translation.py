"""The pure parts of the OpenAI and Deepgram adapters: formats, turn detection, words."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.datastructures import QueryParams

from gateway.options import BadInput, Turn
from gateway.protocols.deepgram_query import keyterms, language, speaks_deepgram, spoken_words, spread
from gateway.protocols.openai_config import parse_format, parse_turn


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
