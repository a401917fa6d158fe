"""scripts/gpu-check, the tool for a lent GPU machine, run here as CI runs it: `--dry-run` does
every step on the CPU with a small model, each in its own process under its own limit, and the
report is written after each step."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_dry_run_does_every_step_and_a_step_past_its_limit_leaves_the_others(tmp_path: Path) -> None:
    out = tmp_path / "gpu-check.json"
    # The load step gets one second: too little to import CTranslate2 and load a model.
    env = {**os.environ, "GPU_CHECK_LIMITS": json.dumps({"load": 1})}
    run = subprocess.run(
        ["bash", "scripts/gpu-check", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert run.returncode == 1, run.stdout + run.stderr  # a step timed out: the check says so
    steps = json.loads(out.read_text())["steps"]
    assert list(steps) == ["device", "model", "load", "words", "lanes", "batch", "streams"]
    assert steps["load"]["status"] == "timeout"
    assert {n: s["status"] for n, s in steps.items() if n != "load"} == dict.fromkeys(
        ["device", "model", "words", "lanes", "batch", "streams"], "ok"
    ), run.stdout
    r = {n: s["result"] for n, s in steps.items() if n != "load"}
    assert r["device"]["ctranslate2"] and "cpu" in r["device"]["compute_types"]
    assert r["model"]["cost_model_random"] and Path(r["model"]["cost_model"], "model.bin").exists()
    assert r["words"]["wer_pct"] < 30 and r["words"]["failed"] == 0  # the real tiny.en heard the sentences
    assert r["lanes"]["decodes_both_lanes"] == 16 and r["lanes"]["final_alone_ms_p50"] > 0
    assert set(r["batch"]["batches"]) == {"1", "2"}
    assert "streams_at_1s_p95" in r["streams"]["decoders"]["1"]
    assert "== load (at most 1 s)" in run.stdout and "load: timeout" in run.stdout


def test_a_machine_with_cuda_13s_cublas_only_is_told_what_is_missing_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import gpu_steps
    from decoder import devices

    monkeypatch.setattr(devices, "cuda_count", lambda: 1)
    monkeypatch.setattr(gpu_steps, "smi", lambda fields, index=None: [["NVIDIA H200", "580.1", "143771", "9.0"]])
    monkeypatch.setattr(gpu_steps, "cublas_found", lambda: {"12": [], "13": ["/opt/nvidia/cu13/lib/libcublas.so.13"]})
    r = gpu_steps.device(SimpleNamespace(device_index=0, dry_run=False), {})
    assert r["gpus"][0]["compute_capability"] == "9.0"
    problem = r["problem"]
    assert "libcublas.so.12" in problem and "CUDA 13's only" in problem and "nvidia-cublas-cu12" in problem
    assert "linked under the .so.12 names" in problem
    monkeypatch.setattr(gpu_steps, "cublas_found", lambda: {"12": ["/x/libcublas.so.12"], "13": []})
    assert gpu_steps.device(SimpleNamespace(device_index=0, dry_run=False), {})["problem"] is None


def test_made_speech_is_kept_and_read_back_without_espeak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stt import speech

    monkeypatch.setenv(speech.SPEECH_DIR, str(tmp_path))
    made = speech.synth("The birch canoe slid on the smooth planks.")
    assert len(list(tmp_path.glob("*.wav"))) == 1
    monkeypatch.setattr(speech, "have_espeak", lambda: False)
    again = speech.synth("The birch canoe slid on the smooth planks.")
    assert (again == made).all()
    with pytest.raises(RuntimeError, match=r"espeak-ng is not installed.*gpu-check --prepare"):
        speech.synth("A sentence nobody made.")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_int8_copy_of_tiny_en_that_travels_to_a_gpu_says_the_spoken_words(tmp_path: Path) -> None:
    from faster_whisper import WhisperModel

    from benchmarks.ct2_int8 import quantize
    from decoder.models import bundled_model
    from stt.wer import wer
    from tests.realspeech import jfk, utterance

    quantize(bundled_model(), tmp_path)
    assert (tmp_path / "model.bin").stat().st_size < 0.55 * (bundled_model() / "model.bin").stat().st_size
    model = WhisperModel(str(tmp_path), device="cpu", compute_type="int8", cpu_threads=1)
    for speech in (jfk(tail_s=0.3), utterance("6880-216547-0000", tail_s=0.3)):
        segments, _ = model.transcribe(speech.audio, language="en", beam_size=1)
        said = " ".join(s.text for s in segments)
        assert wer(" ".join(speech.texts), said) <= 0.2, said
