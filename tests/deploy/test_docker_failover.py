"""deploy/docker-compose.ha.yml under a real Docker engine (slow): Redis's primary SIGKILLed, its
container and volume gone, while four clients talk through nginx; the Sentinels promote the
replica, every process follows, and every sentence still gets exactly one final with its words.
The failover gap and the finals' latency land in test-artifacts/docker-failover.json."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.stream import connect
from stt.speech import Speech
from stt.wer import wer
from tests.conftest import ROOT, wait_for
from tests.deploy.conftest import TIMINGS, Cluster, four_talks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ARTIFACTS = Path(os.environ.get("STT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")


def sentinel(cluster: Cluster, *args: str) -> list[str]:
    [container] = cluster.containers("sentinel-1")
    return cluster.docker("exec", container, "redis-cli", "-p", "26379", *args).split()


def replica_linked(cluster: Cluster) -> bool:
    """Sentinel-1 knows the replica, up and linked: a failover can promote it."""
    words = sentinel(cluster, "SENTINEL", "REPLICAS", "mymaster")
    fields = dict(zip(words[::2], words[1::2], strict=False))
    return fields.get("master-link-status") == "ok" and "s_down" not in fields.get("flags", "s_down")


@pytest.fixture(scope="module")
def ha(docker_env: dict[str, str]) -> Iterator[Cluster]:
    c = Cluster(docker_env, files=("docker-compose.ha.yml",))
    try:
        c.compose("up", "-d", "--no-build", "--scale", "decoder-cpu=2", timeout=600)
        wait_for(lambda: "stt-cluster is up" in c.logs("nginx"), 180, "nginx's line", interval=1)
        wait_for(c.ready, 60, "/ready through nginx", interval=0.5)
        wait_for(lambda: replica_linked(c), 60, "the Sentinels to know the replica", interval=0.5)
        yield c
    finally:
        c.compose("down", "-v", "--remove-orphans", timeout=300)


def test_the_primary_killed_mid_session_loses_no_final(ha: Cluster) -> None:
    talks = four_talks()
    [replica] = ha.addresses("redis-replica")
    [primary] = ha.containers("redis")
    killed_at: list[float] = []
    arrivals: list[tuple[float, float]] = []  # (when it came, its latency from the end of speech)

    async def client(speech: Speech, first_final: asyncio.Event) -> list[dict[str, Any]]:
        async with connect(ha.url, sample_rate=16000) as stream:
            t0 = time.monotonic()
            async for m in stream.receive_while(stream.send_audio(speech.pcm16, speed=1.0)):
                if m["type"] == "final":
                    now = time.monotonic()
                    arrivals.append((now, now - t0 - m["end"]))
                    first_final.set()
            return stream.messages

    async def scenario() -> list[list[dict[str, Any]]]:
        first_final = asyncio.Event()
        clients = [asyncio.create_task(client(t, first_final)) for t in talks]
        await first_final.wait()
        # The node lost: the container SIGKILLed and removed, its data with it.
        killed_at.append(time.monotonic())
        await asyncio.to_thread(ha.docker, "rm", "-f", primary)
        await asyncio.to_thread(ha.docker, "volume", "rm", "%s_redis-data" % ha.project)
        return list(await asyncio.gather(*clients))

    results = asyncio.run(scenario())
    for msgs, speech in zip(results, talks, strict=True):
        assert msgs[-1]["type"] == "done" and not [m for m in msgs if m["type"] == "error"], msgs[-3:]
        got = [m for m in msgs if m["type"] == "final"]
        assert [f["utterance"] for f in got] == list(range(len(got))), "each final once, in order"
        assert wer(speech.text, " ".join(f["text"] for f in got)) <= 0.25, (speech.text, got)
    promoted = sentinel(ha, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
    assert promoted[0] == replica, "the Sentinels promoted the replica"
    kill = killed_at[0]
    before = [lat for t, lat in arrivals if t < kill]
    after = sorted((t - kill, lat) for t, lat in arrivals if t >= kill)
    assert after, "finals came after the kill"
    report = {
        **TIMINGS,
        "failover_gap_s": round(after[0][0], 2),
        "finals_before_kill": len(before),
        "finals_after_kill": len(after),
        "latency_before_s": {"median": round(statistics.median(before), 2), "max": round(max(before), 2)},
        "latency_after_s": {
            "median": round(statistics.median(lat for _, lat in after), 2),
            "max": round(max(lat for _, lat in after), 2),
        },
        # Every final: (seconds from the kill, end of speech to final): benchmarks/charts.py draws it.
        "timeline": [(round(t - kill, 2), round(lat, 2)) for t, lat in sorted(arrivals)],
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "docker-failover.json").write_text(json.dumps(report, indent=2))
    print("failover:", json.dumps(report))
