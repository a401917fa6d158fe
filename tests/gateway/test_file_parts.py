"""Pure parts of file transcription: how a file is cut into parts, subtitle timestamps."""

from __future__ import annotations

import itertools

import numpy as np

from client.speech import SENTENCES, conversation
from common.audio import float32_to_pcm16
from common.settings import Settings
from gateway.files import BYTES_PER_S, speech_parts
from gateway.transcriptions import subtitles, timestamp


def test_spans_of_speech_are_joined_into_parts_within_the_limit() -> None:
    speech = conversation(list(SENTENCES[:8]), pause_s=1.5, lead_s=2.0)
    pcm = float32_to_pcm16(speech.audio)
    parts = speech_parts(pcm, Settings.from_env({"FILE_PART_S": "8"}))
    assert len(parts) >= 3
    for (_, e0), (s1, _) in itertools.pairwise(parts):
        assert e0 <= s1, "parts do not overlap and come in order"
    for s, e in parts:
        assert 0 < (e - s) / BYTES_PER_S <= 25.0
    # Every sentence lies inside one part (its speech is never cut between two).
    for start, end in speech.spans:
        assert any(s / BYTES_PER_S <= start + 0.05 and end - 0.05 <= e / BYTES_PER_S for s, e in parts), (start, end)
    # With a larger limit there are fewer, longer parts; the leading silence is never a part.
    fewer = speech_parts(pcm, Settings.from_env({"FILE_PART_S": "20"}))
    assert len(fewer) < len(parts) and fewer[0][0] / BYTES_PER_S > 1.0


def test_silence_has_no_parts() -> None:
    assert speech_parts(float32_to_pcm16(np.zeros(16000 * 5, np.float32)), Settings.from_env({})) == []


def test_subtitle_timestamps() -> None:
    assert timestamp(3723.4567, ",") == "01:02:03,457"
    assert timestamp(0.0, ".") == "00:00:00.000"
    segs = [{"start": 0.5, "end": 2.0, "text": "Hello."}, {"start": 3.0, "end": 4.25, "text": "Bye."}]
    srt = "1\n00:00:00,500 --> 00:00:02,000\nHello.\n\n2\n00:00:03,000 --> 00:00:04,250\nBye.\n"
    assert subtitles(segs, ",") == srt
    assert subtitles(segs, ".").startswith("00:00:00.500 --> 00:00:02.000\nHello.\n\n00:00:03.000")
