"""Recorded human speech for tests: LibriSpeech utterances with the corpus's transcripts
(tests/data/real) and jfk.flac, as `Speech` with known words."""

from __future__ import annotations

import functools
import json
from typing import Any

from decoder.engine import Engine
from stt.speech import Speech, recording
from tests.conftest import JFK, JFK_TEXT, ROOT

REAL = ROOT / "tests" / "data" / "real"


@functools.cache
def refs() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads((REAL / "refs.json").read_text())
    return data


def utterance(utt_id: str, tail_s: float = 1.5) -> Speech:
    """One LibriSpeech utterance by its id ("6880-216547-0000")."""
    name = "librispeech_%s.flac" % utt_id
    return recording(str(REAL / name), refs()[name]["text"].lower(), tail_s=tail_s)


def jfk(tail_s: float = 1.5) -> Speech:
    return recording(str(JFK), JFK_TEXT, tail_s=tail_s)


def direct_text(engine: Engine, speech: Speech) -> str:
    """The whole recording decoded by faster-whisper's own transcribe, same model and beam: the
    words a streamed session is held to."""
    segments, _ = engine.model.transcribe(speech.audio, language="en", beam_size=engine.settings.FINAL_BEAM)
    return " ".join(s.text.strip() for s in segments)
