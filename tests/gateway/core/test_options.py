"""The input rules every protocol shares."""

from __future__ import annotations

import pytest

from gateway.core.options import (
    BadInput,
    check_keyterms,
    check_language,
    check_prompt,
    check_rate,
    check_served_language,
)


def test_rates() -> None:
    assert check_rate(8000) == 8000 and check_rate(96000) == 96000
    for bad in (7999, 96001, "16000", True):
        with pytest.raises(BadInput) as err:
            check_rate(bad)
        assert err.value.code == "bad_sample_rate" and err.value.fatal


def test_languages() -> None:
    assert check_language("EN") == "en" and check_language("auto") is None and check_language(None) is None
    with pytest.raises(BadInput, match="not a Whisper language"):
        check_language("klingon")
    with pytest.raises(BadInput) as err:
        check_served_language("de", english_only=True)
    assert err.value.fatal
    check_served_language("de", english_only=False)


def test_prompts_are_refused_not_cut() -> None:
    assert check_prompt(None) == ""
    with pytest.raises(BadInput) as err:
        check_prompt("x" * 5000)
    assert err.value.code == "field_too_long" and "5000" in err.value.message and len(err.value.message) < 100


def test_keyterms_are_bounded() -> None:
    assert check_keyterms(["  Siobhan   Ngubane ", "Kubernetes", "Kubernetes", ""]) == ("Siobhan Ngubane", "Kubernetes")
    assert check_keyterms("Stella") == ("Stella",) and check_keyterms(None) == ()
    for bad in (["x" * 65], ["a"] * 51, [str(i) * 20 for i in range(30)], [1], {"a": 1}):
        with pytest.raises(BadInput) as err:
            check_keyterms(bad)
        assert err.value.code == "bad_keyterms" and len(err.value.message) < 120
