"""The compose cluster under a real Docker engine: the engine, the images, one compose project."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common import keys
from stt.speech import Speech, joined
from tests.conftest import ROOT, wait_for

DEPLOY = ROOT / "deploy"
TIMINGS: dict[str, Any] = {}  # what the engine's set-up took, for the modules' artifacts


def run(cmd: list[str], env: dict[str, str], timeout: float, cwd: Path = ROOT) -> str:
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, "%s failed (%d):\n%s\n%s" % (" ".join(cmd), out.returncode, out.stdout, out.stderr)
    return out.stdout


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise AssertionError("no free port")


class Cluster:
    """One compose project of deploy/docker-compose.yml (and `files` on top of it), CPU profile."""

    def __init__(self, env: dict[str, str], files: tuple[str, ...] = ()) -> None:
        self.files = ("docker-compose.yml", *files)
        self.project = "stte2e%d" % os.getpid()
        self.port = free_port(8000)
        self.prom_port = free_port(9090)
        self.password = secrets.token_hex(16)
        self.env = {
            **env,
            "REDIS_PASSWORD": self.password,
            "COMPOSE_PROFILES": "cpu",
            "STT_PORT": str(self.port),
            "PROMETHEUS_PORT": str(self.prom_port),
        }
        self.url = "ws://127.0.0.1:%d/v1/listen" % self.port

    def compose(self, *args: str, timeout: float = 300) -> str:
        files = [a for f in self.files for a in ("-f", f)]
        return run(["docker-compose", "-p", self.project, *files, *args], self.env, timeout, cwd=DEPLOY)

    def docker(self, *args: str, timeout: float = 120) -> str:
        return run(["docker", *args], self.env, timeout)

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).split()

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", service)

    def redis(self, *args: str) -> str:
        [redis] = self.containers("redis")
        return self.docker("exec", redis, "redis-cli", "--no-auth-warning", "-a", self.password, *args)

    def prometheus(self, query: str) -> list[dict[str, Any]]:
        url = "http://127.0.0.1:%d/api/v1/query?query=%s" % (self.prom_port, urllib.parse.quote(query))
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.load(r)
        except OSError:
            return []
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/ready" % self.port, timeout=3) as r:
                return bool(json.load(r).get("ready"))
        except OSError:
            return False

    def scale_decoders(self, n: int) -> None:
        self.compose("up", "-d", "--no-build", "--scale", "decoder-cpu=%d" % n, timeout=300)
        wait_for(lambda: len(self.live_decoders()) == n, 120, "%d live decoders" % n, interval=0.5)

    def live_decoders(self) -> list[str]:
        members = self.redis("ZRANGEBYSCORE", keys.node_index("decoder"), str(int(time.time() * 1000)), "+inf")
        return members.split()

    def addresses(self, service: str) -> set[str]:
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return {self.docker("inspect", "-f", fmt, c).strip() for c in self.containers(service)}


@pytest.fixture(scope="session")
def docker_env() -> Iterator[dict[str, str]]:
    if shutil.which("docker") is None or shutil.which("docker-compose") is None:
        pytest.skip("docker and docker-compose are not installed (.ci/run installs docker.io and docker-compose)")
    env = {**os.environ}
    started = False
    if not env.get("DOCKER_HOST"):
        started = True
        out = run(["bash", "scripts/private-dockerd", "start"], env, 120)
        env["DOCKER_HOST"] = out.strip().split("=", 1)[1]
    t0 = time.monotonic()
    run(["bash", "scripts/offline-images"], {**env, "PYTHON": sys.executable}, 1500)
    TIMINGS["images_s"] = round(time.monotonic() - t0, 1)
    yield env
    if started:
        run(["bash", "scripts/private-dockerd", "stop"], env, 120)


def four_talks() -> list[Speech]:
    """Four clients' speech: two recorded speakers each, 1.2 s apart."""
    from tests.realspeech import utterance

    pairs = (
        ("6880-216547-0000", "1183-124566-0000"),
        ("4640-19187-0000", "2518-154825-0000"),
        ("7902-96591-0000", "5514-19192-0000"),
        ("6930-75918-0000", "6880-216547-0000"),
    )
    return [joined([utterance(a, tail_s=0.0), utterance(b, tail_s=0.0)], [1.2]) for a, b in pairs]
