"""How `stt up` sizes its decoders (pure logic; the process tree itself is tests/stt/test_up.py,
device choice is tests/decoder/test_devices.py)."""

from __future__ import annotations

import pytest

from common.settings import Settings
from decoder.devices import CPU_DECODERS, Placement
from stt import supervisor
from stt.supervisor import decoder_env, decoder_plan


def settings(**env: str) -> Settings:
    return Settings.from_env({"DEVICE": "cpu", "DECODER_ID": "dec", **env})


def test_a_cpu_gets_two_decoders_with_a_thread_per_lane_per_two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(decoder_plan(settings(), gpus=0)) == CPU_DECODERS == 2
    assert len(decoder_plan(settings(DECODERS="3"), gpus=0)) == 3
    plan = decoder_plan(settings(), gpus=0)
    for cores, threads in ((1, "1"), (2, "1"), (4, "1"), (8, "2"), (64, "4")):
        monkeypatch.setattr(supervisor, "usable_cores", lambda cores=cores: cores)
        env = decoder_env(settings(), 1, plan)
        assert env["CPU_THREADS"] == threads, cores
        assert env["DECODER_ID"] == "dec-1" and env["DEVICE_INDEX"] == "0" and env["DEVICE"] == "cpu"


def test_cpu_threads_given_and_gpus_are_left_alone() -> None:
    assert "CPU_THREADS" not in decoder_env(settings(CPU_THREADS="3"), 0, decoder_plan(settings(), gpus=0))
    cuda = Settings.from_env({"DEVICE": "cuda", "DECODER_ID": "dec", "DECODERS": "2"})
    plan = decoder_plan(cuda, gpus=1)
    assert plan == [Placement("cuda", 0), Placement("cuda", 0)]
    env = decoder_env(cuda, 1, plan)
    assert env["DEVICE_INDEX"] == "0" and env["DEVICE"] == "cuda" and "CPU_THREADS" not in env
    auto = Settings.from_env({"DEVICE": "auto", "DECODER_ID": "dec"})
    assert decoder_env(auto, 1, decoder_plan(auto, gpus=2)) | {"DECODER_ID": ""} == {
        "DEVICE": "auto",
        "DEVICE_INDEX": "1",
        "DECODER_ID": "",
        "METRICS_PORT": "9101",
    }


def test_stt_up_refuses_cuda_without_a_gpu() -> None:
    # This machine has no GPU.
    assert (
        supervisor.Supervisor(Settings.from_env({"DEVICE": "cuda", "REDIS_URL": "redis://127.0.0.1:1/0"})).run() == 69
    )
