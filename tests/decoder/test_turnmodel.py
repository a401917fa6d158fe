"""The end-of-turn model (decoder/turnmodel.py): its features are faster-whisper's log-mel on the
same audio, and on a recorded sentence it says "done" at the end and "not yet" where the
sentence is cut after a function word."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from decoder.turnmodel import SAMPLES, features, log_mel
from tests.realspeech import utterance


def test_the_log_mel_is_faster_whispers() -> None:
    from faster_whisper.feature_extractor import FeatureExtractor

    rng = np.random.default_rng(0)
    speech = utterance("6930-75918-0000", tail_s=0.0).audio
    audio = np.concatenate([speech, rng.normal(0, 0.01, SAMPLES).astype(np.float32)])[:SAMPLES]
    theirs = FeatureExtractor(feature_size=80)(audio, padding=0)
    ours = log_mel(audio)
    assert ours.shape == theirs.shape == (80, 800)
    assert float(np.abs(ours - theirs).max()) < 1e-4


def test_short_audio_is_padded_before_with_silence_and_long_audio_keeps_its_end() -> None:
    rng = np.random.default_rng(1)
    one_second = rng.normal(0, 0.1, 16000).astype(np.float32)
    short = features(one_second)
    assert short.shape == (80, 800)
    # The end of the window is the audio, the start silence (at the floor the clamp sets).
    assert short[:, -50:].mean() > short[:, :50].mean() + 0.5
    long = np.concatenate([rng.normal(0, 0.1, SAMPLES).astype(np.float32), one_second])
    np.testing.assert_allclose(features(long), features(long[-SAMPLES:]))


def test_done_at_a_finished_sentence_not_yet_after_a_function_word(turn_model: Any) -> None:
    speech = utterance("1183-124566-0000", tail_s=0.0)  # "The master said, though a man have…"
    pause = np.zeros(3200, np.float32)  # the 200 ms of silence the gateway asks at
    done = turn_model.probability(np.concatenate([speech.audio, pause]))
    cut = int(0.93 * 16000)  # after "The master said, the…": mid-sentence
    not_yet = turn_model.probability(np.concatenate([speech.audio[:cut], pause]))
    assert done >= 0.7 and not_yet <= 0.3, (done, not_yet)


@pytest.mark.parametrize("seconds", [0.5, 12.0])
def test_any_length_of_audio_gives_a_probability(turn_model: Any, seconds: float) -> None:
    p = turn_model.probability(np.zeros(int(seconds * 16000), np.float32))
    assert 0.0 <= p <= 1.0
