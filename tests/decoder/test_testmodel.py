from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np


def digest(path: Path) -> str:
    return hashlib.sha256((path / "model.bin").read_bytes()).hexdigest()


def test_cli_writes_a_loadable_deterministic_model(tmp_path: Path, micro_model: Path) -> None:
    out = tmp_path / "m"
    proc = subprocess.run(
        [sys.executable, "-m", "stt", "make-test-model", str(out), "--size", "micro", "--seed", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote micro test model" in proc.stdout
    assert digest(out) == digest(micro_model)
    from faster_whisper import WhisperModel

    model = WhisperModel(str(out), device="cpu", compute_type="int8")
    assert model.model.n_mels == 80
    segments, _ = model.transcribe(
        np.zeros(16000, np.float32), language="en", max_new_tokens=8, without_timestamps=True
    )
    assert isinstance("".join(s.text for s in segments), str)
    tok = model.hf_tokenizer
    assert tok.token_to_id("<|endoftext|>") == 50257 and tok.token_to_id("<|notimestamps|>") == 50363
    assert tok.get_vocab_size() == 51865


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep")
    proc = subprocess.run(
        [sys.executable, "-m", "stt", "make-test-model", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert (tmp_path / "x").read_text() == "keep"
