"""How `stt up` sizes its decoders (pure logic; the process tree itself is tests/stt/test_up.py)."""

from __future__ import annotations

import pytest

from common.settings import Settings
from stt import supervisor
from stt.supervisor import CPU_DECODERS, decoder_count, decoder_env


def settings(**env: str) -> Settings:
    return Settings.from_env({"DEVICE": "cpu", "DECODER_ID": "dec", **env})


def test_a_cpu_gets_two_decoders_with_a_thread_per_lane_per_two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert decoder_count(settings()) == (CPU_DECODERS, False) == (2, False)
    assert decoder_count(settings(DECODERS="3")) == (3, False)
    for cores, threads in ((1, "1"), (2, "1"), (4, "1"), (8, "2"), (64, "4")):
        monkeypatch.setattr(supervisor, "usable_cores", lambda cores=cores: cores)
        env = decoder_env(settings(), 1, 2, gpu=False)
        assert env["CPU_THREADS"] == threads, cores
        assert env["DECODER_ID"] == "dec-1" and env["DEVICE_INDEX"] == "0"


def test_cpu_threads_given_and_gpus_are_left_alone() -> None:
    assert "CPU_THREADS" not in decoder_env(settings(CPU_THREADS="3"), 0, 2, gpu=False)
    gpu = decoder_env(Settings.from_env({"DEVICE": "cuda", "DECODER_ID": "dec"}), 1, 2, gpu=True)
    assert gpu["DEVICE_INDEX"] == "1" and "CPU_THREADS" not in gpu
