"""Gateways for the tests: in this process (uvicorn serving the real app on a free port, a
decoder worker with the micro model beside it), or as a cluster of real `stt` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.lifecycle import StopFlag, heartbeat
from common.redis_server import free_port
from common.settings import Settings
from decoder.engine import Engine
from gateway.transport.process import GatewayState
from gateway.transport.server import GatewayServer
from stt.speech import SENTENCES, Speech, conversation
from tests.conftest import REAL_MODEL, Proc, async_wait_for, make_settings, settings_env, wait_for
from tests.jobs import running_worker
from tests.proxy import Proxy


@dataclass
class Gateway:
    """A gateway served in this process."""

    url: str
    http: str
    settings: Settings
    state: GatewayState
    server: GatewayServer


@contextlib.asynccontextmanager
async def serve_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    server = GatewayServer(settings)
    config = server.config
    task = asyncio.create_task(server.serve(), name="gateway")
    await async_wait_for(lambda: server.started or task.done(), 20, "the gateway to start")
    if task.done():
        task.result()
        raise AssertionError("the gateway stopped at start")
    base = "%s:%d" % (settings.HOST, settings.PORT)
    try:
        app: Any = config.app
        yield Gateway("ws://%s/v1/listen" % base, "http://%s" % base, settings, app.state.gw, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def gateway_settings(model: Path | str, redis_url: str, **overrides: Any) -> Settings:
    """A gateway's settings on a free port of this machine's loopback."""
    port = free_port()
    return make_settings(model, redis_url, PORT=port, HOST="127.0.0.1", GATEWAY_ID="gw-%d" % port, **overrides)


@pytest.fixture(scope="session")
def micro_engine(micro_model: Path) -> Engine:
    engine = Engine(make_settings(micro_model, "redis://127.0.0.1:1/0", DECODE_BATCH=2))
    engine.load()
    return engine


@contextlib.asynccontextmanager
async def silent_decoder(redis: Any) -> AsyncIterator[None]:
    """A decoder's heartbeat without a decoder: jobs are admitted, and nobody answers them."""
    stop = StopFlag()
    beat = asyncio.create_task(heartbeat(redis, "decoder", "dec-silent", lambda: {"model": "none"}, 0.2, 5.0, stop))
    try:
        yield
    finally:
        stop.request()
        await beat


def refreshed(gw: Gateway) -> Callable[[], Any]:
    async def check() -> bool:
        await gw.state.refresh_decoders()
        return bool(gw.state.decoders)

    return check


@pytest.fixture
async def gateway(
    request: pytest.FixtureRequest, micro_model: Path, micro_engine: Engine, redis_url: str
) -> AsyncIterator[Gateway]:
    """A gateway in this process and a decoder worker beside it, with the micro model, or the real
    tiny.en when the parametrization says {"MODEL_NAME": "tiny.en"}; {"turns": True}: the decoder
    answers end-of-turn questions with the real model; {"decoder": False}: a decoder
    that sends heartbeats (so sessions are admitted) and never decodes; {"decoder": "none"}: none.
    Settings overrides come from indirect parametrization."""
    overrides: dict[str, Any] = {"DECODE_BATCH": 2, "FINAL_TIMEOUT_S": 8.0, **getattr(request, "param", {})}
    with_decoder = overrides.pop("decoder", True)
    turns = request.getfixturevalue("turn_model") if overrides.pop("turns", False) else None
    engine = micro_engine
    if overrides.get("MODEL_NAME") == REAL_MODEL:
        engine = request.getfixturevalue("real_engine")
    settings = gateway_settings(micro_model, redis_url, DECODER_ID="dec-local", **overrides)
    async with serve_gateway(settings) as gw:
        if with_decoder == "none":
            yield gw
            return
        if not with_decoder:
            async with silent_decoder(gw.state.redis):
                await async_wait_for(refreshed(gw), 10, "the silent decoder's heartbeat")
                yield gw
            return
        async with running_worker(settings, engine, turns):
            await async_wait_for(lambda: gw.state.decoders, 10, "the decoder's heartbeat")
            yield gw


@dataclass
class Cluster:
    url: str
    http: str
    settings: Settings
    decoder: Proc
    gateway: Proc
    env: dict[str, str]


@pytest.fixture(scope="module")
def three_sentences() -> Speech:
    return conversation(list(SENTENCES[:3]), pause_s=1.2)


def _ready(http: str) -> bool:
    try:
        return httpx.get(http + "/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, spawn: Callable[..., Proc], micro_model: Path, redis_url: str
) -> Iterator[Cluster]:
    """A decoder and a gateway process; settings overrides come from indirect parametrization."""
    port = free_port()
    overrides = {"DECODE_BATCH": 2, "FINAL_TIMEOUT_S": 8.0, **getattr(request, "param", {})}
    settings = make_settings(
        micro_model, redis_url, PORT=port, HOST="127.0.0.1", GATEWAY_ID="gw-%d" % port, **overrides
    )
    env = settings_env(settings)
    decoder = spawn(["decoder"], {**env, "DECODER_ID": "dec-1"}, name="decoder")
    gateway = spawn(["gateway"], env, name="gateway")
    http = "http://127.0.0.1:%d" % port
    wait_for(lambda: _ready(http) or gateway.popen.poll() is not None, 60, "gateway /ready")
    assert gateway.popen.poll() is None, gateway.output()
    yield Cluster("ws://127.0.0.1:%d/v1/listen" % port, http, settings, decoder, gateway, env)


@dataclass
class Pair:
    """Two gateways (A serves first), one decoder, a proxy in front."""

    env: dict[str, str]
    ports: list[int]
    gateways: dict[int, Proc]
    decoder: Proc
    spawn: Callable[..., Proc]

    def start_gateway(self, port: int) -> Proc:
        proc = self.spawn(["gateway"], {**self.env, "PORT": str(port), "GATEWAY_ID": "gw-%d" % port}, name="gw")
        self.gateways[port] = proc
        return proc

    def ready(self, port: int) -> bool:
        try:
            return httpx.get("http://127.0.0.1:%d/ready" % port, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self, port: int) -> None:
        proc = self.gateways[port]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def pair(spawn: Callable[..., Proc], redis_url: str) -> Iterator[Pair]:
    """Two `stt gateway` processes on one Redis and a decoder with the real tiny.en."""
    settings = make_settings(REAL_MODEL, redis_url, HOST="127.0.0.1", DECODE_BATCH=2, FINAL_TIMEOUT_S=6.0)
    env = settings_env(settings, RESUME_TTL_S=30)
    decoder = spawn(["decoder"], {**env, "DECODER_ID": "dec-1"}, name="decoder")
    p = Pair(env, [free_port(), free_port()], {}, decoder, spawn)
    for port in p.ports:
        p.start_gateway(port)
    wait_for(lambda: all(p.ready(port) for port in p.ports), 90, "both gateways ready")
    yield p


@pytest.fixture
async def proxy(pair: Pair) -> AsyncIterator[Proxy]:
    async with Proxy(pair.ports) as proxy:
        yield proxy
