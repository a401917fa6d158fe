"""A final that says its whole text twice (decoder/doubling.py): found, decoded again with a little
more audio, else one copy kept; and on the real tiny.en, the recorded cuts that decode their
sentence twice come back once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from common.messages import Job, JobKind
from decoder.doubling import one_copy, settle, too_many_words
from decoder.engine import Engine
from stt.wer import wer


def test_a_phrase_said_twice_or_more_is_found_and_one_copy_named() -> None:
    twice = "Concord returned to its place amidst the tents. Concord returned to its place amidst the tents."
    assert one_copy(twice) == "Concord returned to its place amidst the tents."
    assert one_copy("Ask what you can do. ask what you can do") == "Ask what you can do."
    assert one_copy("yes yes") is None and one_copy("thank you thank you") is None  # said twice for real
    assert one_copy("Concord returned to its place amidst the tents.") is None
    assert one_copy("We went there and we went there again.") is None  # not the whole text
    assert too_many_words("one two three four five six seven eight nine ten", 0.5)
    assert not too_many_words("Concord returned to its place amidst the tents.", 2.5)


@dataclass
class Out:
    text: str
    audio_s: float = 3.0
    decode_ms: float = 100.0
    no_speech: bool = False
    words: list[dict[str, Any]] | None = field(default=None)


def test_a_doubled_final_takes_the_decode_with_more_audio_or_keeps_one_copy() -> None:
    doubled = "Ask what you can do for your country. Ask what you can do for your country."
    fixed = settle(Out(doubled), lambda: Out("Ask what you can do for your country.", decode_ms=120.0))
    assert fixed.text == "Ask what you can do for your country." and fixed.decode_ms == 220.0
    words = [{"word": " " + w, "start": i * 0.2, "end": i * 0.2 + 0.2} for i, w in enumerate(doubled.split())]
    kept = settle(Out(doubled, words=words), lambda: None)  # no more audio to decode with
    assert kept.text == "Ask what you can do for your country." and kept.words == words[:8]
    again = settle(Out(doubled), lambda: Out(doubled))  # doubled again: still one copy
    assert again.text == "Ask what you can do for your country."
    calls: list[int] = []

    def counted() -> Out | None:
        calls.append(1)
        return None

    empty = settle(Out(doubled), lambda: Out(""))  # the retry heard nothing: the sentence is kept
    assert empty.text == "Ask what you can do for your country."
    plain = Out("Ask what you can do for your country.")
    assert settle(plain, counted) is plain and not calls  # nothing to fix


@pytest.mark.slow
def test_recorded_cuts_that_decode_twice_come_back_once(real_engine: Engine) -> None:
    """On a recorded sentence, tiny.en decodes cuts ending 3.56-3.71 s and 3.98-4.04 s of the
    session twice (measured); through the guard each final says it once."""
    from tests.realspeech import utterance

    speech = utterance("6930-75918-0000", tail_s=1.0)
    # As in the Docker test's talk: 0.5 s of silence, then the sentence; its utterance (pre-roll
    # included) starts at 0.21 s of the session, and the cuts are session times.
    audio = np.concatenate([np.zeros(int(0.29 * 16000), np.float32), speech.audio])
    said = speech.texts[0]
    doubled = 0
    off: list[tuple[int, str, str]] = []
    for cut_ms in (3560, 3590, 3680, 3710, 3980, 4010, 4040):
        clip = audio[: int((cut_ms - 210) * 16)]
        job = Job(id="j", kind=JobKind.FINAL, session="s", gateway="g", utt=0, audio_key="k", audio_end=len(clip) * 2)
        after = audio[len(clip) : len(clip) + int(0.3 * 16000)]
        raw = real_engine._decode_final(job, clip, None).text
        doubled += one_copy(raw) is not None
        out = real_engine.decode_one(job, clip, None, after)
        assert one_copy(out.text) is None, (cut_ms, raw, out.text)  # never said twice
        if wer(said, out.text) > 0.3:
            off.append((cut_ms, raw, out.text))
    assert doubled >= 3, "the model no longer doubles these cuts: pick others"
    # A doubled beam result fails Whisper's compression-ratio check, and the temperature fallback
    # then samples: on the 3.71 s cut, one run in three here came back with other words, or none
    # (measured). One such cut is the model's; two would be the guard's.
    assert len(off) <= 1, off
