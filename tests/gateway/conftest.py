from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from client.speech import SENTENCES, Speech, conversation
from common.redis_server import free_port
from common.settings import Settings
from tests.conftest import Proc, make_settings, settings_env, wait_for


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
def cluster(request: pytest.FixtureRequest, spawn: Callable[..., Proc], micro_model: Path,
            redis_url: str) -> Iterator[Cluster]:
    """A decoder and a gateway process; settings overrides come from indirect parametrization."""
    port = free_port()
    overrides = {"DECODE_BATCH": 2, "FINAL_TIMEOUT_S": 8.0, **getattr(request, "param", {})}
    settings = make_settings(micro_model, redis_url, PORT=port, HOST="127.0.0.1", GATEWAY_ID="gw-%d" % port,
                             **overrides)
    env = settings_env(settings)
    decoder = spawn(["decoder"], {**env, "DECODER_ID": "dec-1"}, name="decoder")
    gateway = spawn(["gateway"], env, name="gateway")
    http = "http://127.0.0.1:%d" % port
    wait_for(lambda: _ready(http) or gateway.popen.poll() is not None, 60, "gateway /ready")
    assert gateway.popen.poll() is None, gateway.output()
    yield Cluster("ws://127.0.0.1:%d/v1/listen" % port, http, settings, decoder, gateway, env)
