"""Engine loading: progress while a model loads, clear errors for models that cannot."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import faster_whisper
import pytest

from common.errors import ModelLoadError
from decoder import engine as engine_module
from decoder.engine import Engine
from tests.conftest import make_settings


class SlowModel:
    """Stands in for WhisperModel: a load that takes a while."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        time.sleep(0.5)
        self.model = object()
        self.hf_tokenizer = type("T", (), {"token_to_id": staticmethod(lambda token: 50258)})()


def test_slow_load_reports_progress(
    micro_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(faster_whisper, "WhisperModel", SlowModel)
    monkeypatch.setattr(engine_module, "PROGRESS_EVERY_S", 0.1)
    with caplog.at_level(logging.INFO, logger="decoder.engine"):
        Engine(make_settings(micro_model, "redis://127.0.0.1:1/0")).load()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("still loading model %s" % micro_model) for m in messages), messages
    assert any(m.startswith("model %s loaded in" % micro_model) for m in messages)


def test_a_directory_that_holds_no_model_cannot_load(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    engine = Engine(make_settings(empty, "redis://127.0.0.1:1/0"))
    with pytest.raises(ModelLoadError, match="cannot load model"):
        engine.load()


def test_the_forced_context_is_taken_off_the_text_and_its_words() -> None:
    from types import SimpleNamespace

    from common.messages import Job
    from decoder.engine import forced_prefix
    from decoder.text import drop_context_words, strip_context

    assert strip_context("The juice of lemons. See you tomorrow.", "The juice of lemons") == "See you tomorrow."
    assert strip_context("The juice of lemons makes", "The juice of lemons") == "makes"
    words = [SimpleNamespace(word=w) for w in (" The", " juice,", " of", " lemons.", " See", " you")]
    assert [w.word for w in drop_context_words(words, "The juice, of lemons.")] == [" See", " you"]
    job = Job(
        id="j",
        kind="final",
        session="s",
        gateway="g",
        utt=1,
        audio_key="a",
        audio_end=2,
        context_text=" Before. ",
        prefix="the stable",
    )
    assert forced_prefix(job, with_context=True) == "Before. the stable"
    assert forced_prefix(job, with_context=False) == "the stable"


def test_cut_loop_keeps_one_turn_of_a_loop_and_leaves_speech_alone() -> None:
    from decoder.text import cut_loop

    assert cut_loop("Good morning. Good morning. Good morning. Good morning. Good") == "Good morning."
    looped = "Ask what you can do for your country. " * 7 + "Ask"
    assert cut_loop("And so. " + looped) == "And so. Ask what you can do for your country."
    assert cut_loop("no no no") == "no no no"  # a word said thrice is speech
    assert cut_loop("the the the the the the the") == "the"
    speech = "ask not what your country can do for you, ask what you can do for your country"
    assert cut_loop(speech) == speech
    assert cut_loop("Bye. Bye.") == "Bye. Bye."
    assert cut_loop("") == ""
