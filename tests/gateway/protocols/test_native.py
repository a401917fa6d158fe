"""The native protocol's parsing and rendering, without a server."""

from __future__ import annotations

import pytest

from gateway.core.events import EndReason, Final, FinalFailed, SpeechStarted
from gateway.core.options import BadInput
from gateway.protocols.native import ProtocolError, parse_client_text, render


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{", "bad_json"),
        ("[]", "bad_message"),
        ('{"op":"dance"}', "unknown_op"),
        ('{"op":"audio","payload":"***"}', "bad_audio"),
        ('{"op":"start","sample_rate":"16k"}', "bad_sample_rate"),
        ('{"op":"start","encoding":"opus"}', "unsupported_encoding"),
        ('{"op":"start","lang":"xx"}', "unknown_language"),
        ('{"op":"start","keyterms":"%s"}' % ("x" * 100), "bad_keyterms"),
        ('{"op":"start","keyterms":[1]}', "bad_keyterms"),
    ],
)
def test_bad_client_messages(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_client_text(text)
    assert err.value.code == code


def test_a_sample_rate_out_of_range_ends_the_connection() -> None:
    with pytest.raises(BadInput) as err:
        parse_client_text('{"op":"start","sample_rate":4000}')
    assert err.value.code == "bad_sample_rate" and err.value.fatal


def test_start_defaults_auto_language_and_keyterms() -> None:
    msg = parse_client_text('{"op":"start","sample_rate":16000,"lang":"auto","keyterms":["Siobhan", " Siobhan ", ""]}')
    assert msg.start is not None and msg.start.lang is None and msg.start.interim
    assert msg.start.hotwords == ("Siobhan",)


def test_events_render_as_the_contract_says() -> None:
    final = Final(
        utt=2,
        text="Hi.",
        start=1.0,
        end=1.5,
        language="en",
        words=[{"word": " Hi.", "start": 1.0, "end": 1.4, "prob": 0.9}],
        no_speech=False,
        confidence=0.8,
        reason=EndReason.SILENCE,
        endpoint_ms=400.0,
        queue_ms=1.0,
        decode_ms=50.0,
    )
    msg = render(final, want_words=True)
    assert msg is not None and msg["type"] == "final" and msg["utterance"] == 2 and msg["words"][0]["prob"] == 0.9
    assert "words" not in (render(final, want_words=False) or {})
    assert render(FinalFailed(3, "boom"), want_words=False) == {
        "type": "error",
        "code": "final_failed",
        "message": "utterance 3 could not be transcribed: boom",
        "utterance": 3,
    }
    assert render(SpeechStarted(0, 0.1), want_words=False) is None
