"""common/redisconn.py: REDIS_URL parsing, and clients that follow a real Sentinel failover."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import redis
from redis.exceptions import RedisError

from common.errors import SettingsError
from common.redis_server import find_redis_server, free_port
from common.redisconn import (
    BadRedisUrl,
    SentinelTarget,
    aclose,
    async_client,
    check_url,
    close,
    parse_sentinel_url,
    sync_client,
)
from common.settings import Settings
from tests.conftest import wait_for


def test_a_sentinel_url_names_sentinels_service_db_and_passwords() -> None:
    got = parse_sentinel_url("redis+sentinel://:p%40ss@s1:26380,s2,10.0.0.3:26379/mymaster/2?sentinel_password=x")
    assert got == SentinelTarget((("s1", 26380), ("s2", 26379), ("10.0.0.3", 26379)), "mymaster", 2, "p@ss", "x")
    assert parse_sentinel_url("redis+sentinel://s1/mymaster") == SentinelTarget(
        (("s1", 26379),), "mymaster", 0, None, None
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel:///mymaster", "names no Sentinel"),
        ("redis+sentinel://s1:26379", "service name"),
        ("redis+sentinel://s1:x/mymaster", "bad Sentinel address"),
        ("redis+sentinel://s1/mymaster/zero", "not a number"),
        ("redis+sentinel://s1/mymaster?master=2", "unknown option"),
        ("http://s1/", "must start with"),
    ],
)
def test_a_bad_url_says_what_is_wrong(url: str, why: str) -> None:
    with pytest.raises(BadRedisUrl, match=why):
        check_url(url)


def test_a_bad_redis_url_fails_at_start_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"REDIS_URL.*service name"):
        Settings.from_env({"REDIS_URL": "redis+sentinel://:secret@s1:26379"})
    ok = Settings.from_env({"REDIS_URL": "redis+sentinel://:secret@s1:26379,s2:26379/mymaster/0"})
    assert ok.redis_url.startswith("redis+sentinel://")


class Topology:
    """A primary, its replica and one Sentinel, real processes on loopback."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.binary = find_redis_server()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[IO[bytes]] = []
        self.ports = {name: free_port() for name in ("primary", "replica", "sentinel")}

    def start(self) -> None:
        common = [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            "pw",
            "--masterauth",
            "pw",
        ]
        primary = str(self.ports["primary"])
        self._spawn("primary", [self.binary, "--port", primary, *common])
        self._spawn(
            "replica",
            [self.binary, "--port", str(self.ports["replica"]), *common, "--replicaof", "127.0.0.1", primary],
        )
        conf = self.tmp / "sentinel.conf"
        conf.write_text(
            "port %d\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 %d 1\n"
            "sentinel auth-pass mymaster pw\nsentinel down-after-milliseconds mymaster 500\n"
            "sentinel failover-timeout mymaster 5000\n" % (self.ports["sentinel"], self.ports["primary"])
        )
        self._spawn("sentinel", [self.binary, str(conf), "--sentinel"])

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.tmp / ("%s.log" % name), "wb")
        self.logs.append(log)
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp)

    @property
    def url(self) -> str:
        return "redis+sentinel://:pw@127.0.0.1:%d/mymaster/0" % self.ports["sentinel"]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        for log in self.logs:
            log.close()


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    t = Topology(tmp_path)
    t.start()
    try:
        yield t
    finally:
        t.stop()


def test_clients_follow_a_failover_when_the_primary_is_killed(topology: Topology) -> None:
    sync = sync_client(topology.url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def replicated() -> bool:
        try:
            return bool(sync.info("replication").get("slave0", {}).get("state") == "online")
        except RedisError:
            return False

    wait_for(replicated, 20, "the replica in sync", interval=0.1)
    sentinel = redis.Redis(port=topology.ports["sentinel"], socket_timeout=1.0)

    def sentinel_knows_the_replica() -> bool:
        # A Sentinel promotes only a replica it has seen up and linked (it learns of replicas
        # from the primary's INFO, every 10 s at first).
        return any(
            r["is_slave"] and not r["is_sdown"] and r["master-link-status"] == "ok"
            for r in sentinel.sentinel_slaves("mymaster")
        )

    wait_for(sentinel_knows_the_replica, 30, "the Sentinel to know the replica", interval=0.2)
    sentinel.close()

    async def scenario() -> tuple[float, str | None, int]:
        client = async_client(topology.url, socket_timeout=1.0, socket_connect_timeout=1.0)
        await client.set("before", "1")
        assert await client.wait(1, 800) == 1
        topology.procs["primary"].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        while True:  # what every caller does with a RedisError: retry
            try:
                await client.set("after", "1")
                break
            except (RedisError, OSError):
                assert time.monotonic() - killed < 30, "no failover within 30 s"
                await asyncio.sleep(0.1)
        gap = time.monotonic() - killed
        before: Any = await client.get("before")
        port = int((await client.info("server"))["tcp_port"])
        await aclose(client)
        return gap, before.decode() if before else None, port

    gap, before, port = asyncio.run(scenario())
    # Acknowledged by the replica (WAIT) before the kill: it survives the failover.
    assert before == "1"
    assert port == topology.ports["replica"], "the client now talks to the promoted replica"
    print("failover gap %.1f s" % gap)

    def sync_follows() -> bool:
        try:
            return bool(sync.get("after") == b"1")
        except RedisError:
            return False

    wait_for(sync_follows, 10, "the blocking client on the new primary", interval=0.1)
    close(sync)
