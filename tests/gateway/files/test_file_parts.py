"""Pure parts of file transcription: how a file is cut into parts, subtitle timestamps."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.audio import float32_to_pcm16
from common.settings import Settings
from gateway.files.split import BYTES_PER_S, BadFile, FileReader, Splitter, speech_parts
from gateway.files.subtitles import cues_of, subtitles, timestamp
from stt.speech import SENTENCES, conversation


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


def test_a_file_cut_as_a_stream_gives_the_parts_of_the_whole() -> None:
    """Fed a chunk at a time (as a file is decoded), the splitter hands each part on as soon as it
    is complete, holds only a part and a little more, and cuts what the whole recording would."""
    speech = conversation(list(SENTENCES[:6]), pause_s=[0.8, 3.0, 0.8, 3.0, 0.8], lead_s=2.0)
    pcm = float32_to_pcm16(speech.audio)
    settings = Settings.from_env({"FILE_PART_S": "6"})
    splitter = Splitter(settings)
    parts, held = [], 0
    for i in range(0, len(pcm), 4410):  # odd-sized chunks, like decoded frames
        for part in splitter.feed(pcm[i : i + 4410]):
            parts.append(part)
            # A part is handed on long before the file ends.
            assert part.end < len(pcm) - 2 * BYTES_PER_S or i + 4410 >= len(pcm) - 3 * BYTES_PER_S
        held = max(held, len(splitter.buf))
    parts += splitter.finish()
    assert [(p.start, p.end) for p in parts] == speech_parts(pcm, settings)
    assert all(p.pcm == pcm[p.start : p.end] for p in parts)
    assert held <= (6 + 25 + 4) * BYTES_PER_S


def test_a_reader_decodes_any_file_and_refuses_one_too_long(tmp_path: Path) -> None:
    speech = conversation(list(SENTENCES[:2]), pause_s=1.0)
    path = tmp_path / "talk.ogg"
    sf.write(path, np.stack([speech.audio, speech.audio], axis=1), 16000, format="OGG", subtype="VORBIS")
    with path.open("rb") as f:
        reader = FileReader(f, Settings.from_env({}))
        parts = []
        while not reader.finished:
            parts += reader.step()
    assert len(parts) >= 1 and abs(reader.bytes / BYTES_PER_S - speech.duration) < 0.1
    with path.open("rb") as f:
        reader = FileReader(f, Settings.from_env({"MAX_FILE_S": "2"}))
        with pytest.raises(BadFile) as err:
            while not reader.finished:
                reader.step()
    assert err.value.code == "too_long" and "MAX_FILE_S" in err.value.message
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"RIFF nonsense " * 100)
    with bad.open("rb") as f, pytest.raises(BadFile) as err:
        FileReader(f, Settings.from_env({})).step()
    assert err.value.code == "invalid_file"


def test_a_long_segment_becomes_readable_cues() -> None:
    text = (
        "It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief."
    )
    tokens = text.split()
    words = [
        {"word": " " + t, "start": 10 + 0.5 * i, "end": 10 + 0.5 * i + 0.4, "prob": 0.9} for i, t in enumerate(tokens)
    ]
    seg = {"start": 10.0, "end": 10 + 0.5 * len(tokens), "text": text, "words": words}
    cues = cues_of(seg)
    assert len(cues) >= 3 and " ".join(c["text"] for c in cues) == text
    for c in cues:
        assert c["end"] - c["start"] <= 7.0 + 1e-6 and len(c["text"]) <= 84
    assert cues[0]["start"] == 10.0 and cues[-1]["end"] == seg["end"]
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(cues))
    assert sum(c["text"].endswith(",") or c is cues[-1] for c in cues) >= len(cues) - 1  # cut at clauses
    # Without word times, by characters.
    plain = cues_of({"start": 0.0, "end": 20.0, "text": text, "words": []})
    assert len(plain) >= 3 and " ".join(c["text"] for c in plain) == text
    assert all(c["end"] - c["start"] <= 7.0 + 1e-6 for c in plain)
    short = {"start": 1.0, "end": 2.0, "text": "Hello.", "words": []}
    assert cues_of(short) == [short]
