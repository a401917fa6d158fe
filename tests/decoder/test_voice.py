"""The speaker encoder without torch: the weight reader (a restricted unpickler) and the numpy
GE2E encoder, pinned to embeddings of recorded speech (docs/benchmarks/speakers.md records its
agreement with Resemblyzer's own torch implementation)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.errors import ModelLoadError
from decoder import torchfile, voice
from decoder.voice import DIM, MAX_WINDOWS, VoiceEncoder, weights_path, window_starts

DATA = Path(__file__).parent.parent / "data" / "speakers"


@pytest.fixture(scope="module")
def encoder() -> VoiceEncoder:
    path = weights_path()
    if not path.is_file():
        pytest.skip("no speaker encoder at %s (python -m stt.turnfile fetches it)" % path)
    return VoiceEncoder.load(path)


def clip(name: str) -> np.ndarray:
    audio, rate = sf.read(DATA / ("librispeech_%s.flac" % name), dtype="float32")
    assert rate == 16000
    return np.asarray(audio)


def test_the_weights_read_without_torch_hold_the_network(encoder: VoiceEncoder) -> None:
    state = torchfile.load(encoder.path)["model_state"]
    assert state["lstm.weight_ih_l0"].shape == (1024, 40) and state["lstm.weight_hh_l2"].shape == (1024, 256)
    assert state["linear.weight"].shape == (256, 256) and state["lstm.bias_ih_l1"].dtype == np.float32
    assert abs(float(state["lstm.weight_ih_l0"][0, 0]) - float(state["lstm.weight_ih_l0"].ravel()[0])) == 0


def test_a_weights_file_that_names_any_other_callable_is_refused(tmp_path: Path) -> None:
    """A pickle can name any callable (os.system): the reader builds tensors and dicts only."""
    evil = tmp_path / "evil.pt"
    body = io.BytesIO()
    for part in (torchfile.MAGIC, torchfile.PROTOCOL, {"little_endian": True}):
        pickle.dump(part, body, protocol=2)
    body.write(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    evil.write_bytes(body.getvalue())
    with pytest.raises(ModelLoadError, match=r"os\.system"):
        torchfile.load(evil)
    not_torch = tmp_path / "plain.pt"
    not_torch.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelLoadError):
        torchfile.load(not_torch)


def test_embeddings_are_pinned_normed_and_tell_speakers_apart(encoder: VoiceEncoder) -> None:
    a1 = encoder.embed(clip("1688-142285-0009"))
    assert a1.shape == (DIM,) and a1.dtype == np.float32
    assert abs(float(np.linalg.norm(a1)) - 1.0) < 1e-5 and float(a1.min()) >= 0.0
    assert [round(float(x), 3) for x in a1[:6]] == [0.0, 0.0, 0.116, 0.0, 0.0, 0.129]
    assert int(np.argmax(a1)) == 148
    a2 = encoder.embed(clip("1688-142285-0008"))
    b1 = encoder.embed(clip("1998-15444-0007"))
    b2 = encoder.embed(clip("1998-15444-0001"))
    same = min(float(a1 @ a2), float(b1 @ b2))
    other = max(float(a1 @ b1), float(a1 @ b2), float(a2 @ b1), float(a2 @ b2))
    assert same > 0.75 and other < 0.7, (same, other)
    windows = encoder.embed(clip("1688-142285-0009"), partials=True)  # 2.5 s of voice once its pauses are cut
    assert windows.shape == (len(window_starts(int(2.52 * 16000))), DIM) == (2, DIM)


def test_windows_cover_an_utterance_as_resemblyzer_does() -> None:
    assert window_starts(8000) == [0]  # shorter than one window: one, padded
    assert window_starts(16000 * 3) == [0, 77, 154]  # 1.3 a second; the last kept at 3/4 covered


def test_a_long_utterance_is_embedded_from_at_most_max_windows_of_it(
    encoder: VoiceEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live final waits for its embedding: a long one averages MAX_WINDOWS windows spread over
    it, not all of them, and stays that voice's."""
    long = np.concatenate([clip("1688-142285-0009"), clip("1688-142285-0008")] * 3)
    assert len(encoder.embed(long, partials=True)) > MAX_WINDOWS
    seen: list[int] = []
    windows = encoder.windows

    def counted(mels: np.ndarray) -> np.ndarray:
        seen.append(len(mels))
        return windows(mels)

    monkeypatch.setattr(encoder, "windows", counted)
    capped = encoder.embed(long)
    assert seen == [MAX_WINDOWS]
    monkeypatch.setattr(voice, "MAX_WINDOWS", 10**6)
    full = encoder.embed(long)
    other = encoder.embed(clip("1998-15444-0007"))
    assert float(capped @ full) > 0.97 and float(capped @ other) < 0.7
