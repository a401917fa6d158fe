"""`stt up` as a real process tree, for the tests of the command line."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import REAL_MODEL, Proc, wait_for

STT_UP_ENV = {
    "DEVICE": "cpu",
    "COMPUTE_TYPE": "int8",
    "CPU_THREADS": "1",
    "DECODERS": "1",
    "METRICS_PORT": "0",
    "HEARTBEAT_S": "0.5",
    "REDIS_URL": "",
}


@pytest.fixture
def stt_up(spawn: Callable[..., Proc]) -> Callable[..., Proc]:
    def start(port: int) -> Proc:
        proc = spawn(["up"], {**STT_UP_ENV, "MODEL_NAME": REAL_MODEL, "PORT": str(port)}, name="stt-up")
        wait_for(lambda: "stt up: ready" in proc.output() or proc.popen.poll() is not None, 90, "stt up ready")
        assert proc.popen.poll() is None, proc.output()
        return proc

    return start
