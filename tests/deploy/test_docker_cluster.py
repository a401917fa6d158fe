"""deploy/: the compose cluster run for real under a Docker engine (slow).

The images are built from deploy/Dockerfile; their public bases (python, redis, nginx,
prometheus) are stand-ins made from Debian packages by scripts/offline-images, kept in the
engine's data root between runs. Without DOCKER_HOST the tests start scripts/private-dockerd.
Timings and the 1-vs-2 decoder capacity land in test-artifacts/docker-cluster.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.stream import connect
from common import keys
from stt.speech import SENTENCES as ALL_SENTENCES
from stt.speech import Speech, conversation, recording
from stt.wer import wer
from tests.conftest import JFK, JFK_TEXT, ROOT, wait_for
from tests.deploy.conftest import TIMINGS, Cluster, four_talks, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

DEPLOY = ROOT / "deploy"
ARTIFACTS = Path(os.environ.get("STT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
# The three sentences the in-process speech tests hear (tests/gateway/test_speech.py).
SENTENCES = list(ALL_SENTENCES[:3])
timings: dict[str, Any] = {}


@pytest.fixture(scope="module")
def cluster(docker_env: dict[str, str]) -> Iterator[Cluster]:
    c = Cluster(docker_env)
    t0 = time.monotonic()
    try:
        c.compose("up", "-d", "--no-build", "--scale", "decoder-cpu=2", timeout=600)
        wait_for(lambda: "stt-cluster is up" in c.logs("nginx"), 180, "nginx's line", interval=1)
        wait_for(c.ready, 60, "/ready through nginx", interval=0.5)
        timings["up_s"] = round(time.monotonic() - t0, 1)
        yield c
    finally:
        t0 = time.monotonic()
        c.compose("down", "-v", "--remove-orphans", timeout=300)
        timings["down_s"] = round(time.monotonic() - t0, 1)
        left = c.docker("ps", "-aq", "--filter", "label=com.docker.compose.project=%s" % c.project).split()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "docker-cluster.json").write_text(json.dumps({**TIMINGS, **timings}, indent=2))
        assert not left, "containers left after down: %s" % left


async def transcribe(url: str, speech: Speech, speed: float = 1.0) -> list[dict[str, Any]]:
    """Every message of one session, `started` to `done`."""
    async with connect(url, sample_rate=16000) as stream:
        async for _ in stream.receive_while(stream.send_audio(speech.pcm16, speed=speed)):
            pass
        return stream.messages


def finals_of(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in msgs if m["type"] == "final"]


def test_up_prints_where_to_connect_and_serves_the_bundled_model(cluster: Cluster) -> None:
    line = next(x for x in cluster.logs("nginx").splitlines() if "stt-cluster is up" in x)
    assert "ws://localhost:%d/v1/listen" % cluster.port in line
    assert "loading model tiny.en on cpu" in cluster.logs("decoder-cpu")
    users = {cluster.docker("exec", c, "id", "-un").strip() for c in cluster.containers("gateway-1")}
    assert users == {"stt"}, "the service runs as a non-root user"


def test_speech_from_several_clients_through_nginx_reaches_both_gateways(cluster: Cluster) -> None:
    speeches = [conversation(SENTENCES, pause_s=1.0, voice=v) for v in ("en-us", "en-gb", "en-us+f3")]
    speeches.append(recording(str(JFK), JFK_TEXT))

    async def all_at_once() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(transcribe(cluster.url, s) for s in speeches))

    t0 = time.monotonic()
    results = asyncio.run(all_at_once())
    timings["four_clients_s"] = round(time.monotonic() - t0, 1)
    for speech, msgs in zip(speeches, results):
        text = " ".join(f["text"] for f in finals_of(msgs))
        assert wer(speech.text, text) <= 0.3, (speech.text, text)
        assert msgs[-1]["type"] == "done"

    def audio_by_gateway() -> dict[str, float]:
        rows = cluster.prometheus("stt_gateway_audio_seconds_total")
        return {r["metric"]["instance"]: float(r["value"][1]) for r in rows}

    # least_conn sends the four sessions to both gateways; Prometheus (scraping every 5 s) sees
    # each one's share, and soon all of the audio.
    sent = sum(s.duration for s in speeches)

    def counted() -> dict[str, float] | None:
        d = audio_by_gateway()
        return d if len(d) == 2 and all(v > 0 for v in d.values()) and sum(d.values()) >= sent * 0.95 else None

    wait_for(counted, 60, "all the audio counted, on both gateways", interval=1)


def test_the_page_works_through_nginx(cluster: Cluster) -> None:
    chromium = os.environ.get("STT_CHROMIUM", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto("http://127.0.0.1:%d/" % cluster.port)
            assert "tiny.en" in page.inner_text("#model")
            page.set_input_files("#file", str(JFK))
            page.wait_for_function("document.querySelectorAll('#transcript li.final').length >= 2", timeout=60_000)
            page.wait_for_selector("#state[data-state=idle]", timeout=30_000)
            got = page.eval_on_selector_all("#transcript li.final .text", "els => els.map(e => e.textContent)")
        finally:
            browser.close()
    assert wer(JFK_TEXT, " ".join(got)) <= 0.15, got


def test_prometheus_scrapes_every_decoder(cluster: Cluster) -> None:
    want = cluster.addresses("decoder-cpu")
    assert len(want) == 2

    def scraped() -> set[str]:
        return {r["metric"]["instance"].split(":")[0] for r in cluster.prometheus("stt_queue_depth")}

    wait_for(lambda: scraped() == want, 60, "stt_queue_depth from both decoders", interval=1)


def test_a_decoder_killed_holding_a_final_loses_nothing(cluster: Cluster) -> None:
    # Utterance 0 is five sentences run together (~17 s: its decode takes well over a second on
    # a CPU), utterance 1 one more sentence.
    long = list(ALL_SENTENCES[1:6])
    speech = conversation([*long, ALL_SENTENCES[0]], pause_s=[0.15] * (len(long) - 1) + [1.5])
    victim, *others = cluster.containers("decoder-cpu")
    # With speculative finals on (the default), utterance 0's decode usually starts as the
    # speculative job queued in the pause, and its final is answered by that decode: the victim
    # is killed holding whichever of the two it holds first.
    streams = (keys.STREAM_FINAL, keys.STREAM_SPECULATIVE)

    def victim_holds_the_utterance() -> bool:
        return any(victim[:12] in cluster.redis("XPENDING", s, keys.GROUP) for s in streams)

    def wait_until_the_victim_holds_the_utterance() -> None:
        # Polled inside the Redis container, so the kill follows within one `docker` call.
        [redis] = cluster.containers("redis")
        cli = "redis-cli --no-auth-warning -a %s XPENDING %%s %s" % (cluster.password, keys.GROUP)
        held = " || ".join("%s | grep -q %s" % (cli % s, victim[:12]) for s in streams)
        loop = "for i in $(seq 1500); do { %s; } && exit 0; sleep 0.02; done; exit 1" % held
        cluster.docker("exec", redis, "sh", "-c", loop, timeout=60)

    async def session() -> list[dict[str, Any]]:
        async with connect(cluster.url, sample_rate=16000, interim=False) as stream:
            # The others frozen: the victim alone takes the utterance, and is killed decoding it.
            cluster.docker("pause", *others)
            try:
                await stream.send_audio(speech.pcm16, speed=4.0, stop=False)
                await asyncio.to_thread(wait_until_the_victim_holds_the_utterance)
                cluster.docker("kill", victim)
                # Its pending lists, after its death: the job it held and never answered.
                timings["decoder_killed"] = {"held_the_utterance": victim_holds_the_utterance()}
            finally:
                cluster.docker("unpause", *others)
            await stream.stop()
            async for _ in stream:
                pass
            return stream.messages

    t0 = time.monotonic()
    msgs = asyncio.run(session())
    timings["decoder_killed"]["finals_after_s"] = round(time.monotonic() - t0, 1)
    assert timings["decoder_killed"]["held_the_utterance"], "killed while holding the utterance's decode"
    got = finals_of(msgs)
    assert [f["utterance"] for f in got] == [0, 1], "each final once, in order"
    assert wer(speech.text, " ".join(f["text"] for f in got)) <= 0.3, got
    # The killed decoder comes back (restart: unless-stopped) or the survivor serves alone.
    cluster.scale_decoders(2)


def gateway_goes_away(cluster: Cluster, how: str) -> None:
    """Four clients (recorded speakers, the client library: resume on) through nginx; when the
    first final arrives, gateway-1 is stopped (SIGTERM: it drains) or killed (SIGKILL: it dies,
    no word to anyone). Its clients resume on gateway-2 through nginx; every session ends with
    done, every sentence once, with its words."""
    talks = four_talks()

    async def client(speech: Speech, first_final: asyncio.Event) -> tuple[list[dict[str, Any]], int]:
        async with connect(cluster.url, sample_rate=16000) as stream:
            async for m in stream.receive_while(stream.send_audio(speech.pcm16, speed=1.0)):
                if m["type"] == "final":
                    first_final.set()
            return stream.messages, stream.resumes

    async def scenario() -> list[tuple[list[dict[str, Any]], int]]:
        first_final = asyncio.Event()
        clients = [asyncio.create_task(client(t, first_final)) for t in talks]
        await first_final.wait()
        t = time.monotonic()
        if how == "stop":
            await asyncio.to_thread(cluster.compose, "stop", "gateway-1")
        else:
            await asyncio.to_thread(cluster.docker, "kill", *cluster.containers("gateway-1"))
        timings["gateway_%s_s" % how] = round(time.monotonic() - t, 1)
        return list(await asyncio.gather(*clients))

    t0 = time.monotonic()
    results = asyncio.run(scenario())
    timings["gateway_%s_sessions_s" % how] = round(time.monotonic() - t0, 1)
    resumed = sum(r for _, r in results)
    timings["gateway_%s_resumes" % how] = resumed
    assert resumed >= 1, "least_conn gave gateway-1 some of the four sessions"
    for (msgs, _), speech in zip(results, talks):
        assert msgs[-1]["type"] == "done" and not [m for m in msgs if m["type"] == "error"], msgs[-3:]
        got = finals_of(msgs)
        assert [f["utterance"] for f in got] == list(range(len(got))), "each final once, in order"
        assert wer(speech.text, " ".join(f["text"] for f in got)) <= 0.25, (speech.text, got)
    cluster.compose("start", "gateway-1")
    wait_for(
        lambda: (
            "healthy" in cluster.docker("inspect", "-f", "{{.State.Health.Status}}", *cluster.containers("gateway-1"))
        ),
        90,
        "gateway-1 healthy",
        interval=1,
    )


def test_a_stopped_gateway_sends_its_clients_to_resume_on_the_other(cluster: Cluster) -> None:
    gateway_goes_away(cluster, "stop")


def test_a_killed_gateways_clients_resume_on_the_other(cluster: Cluster) -> None:
    gateway_goes_away(cluster, "kill")


def test_decoders_scale_from_one_to_two_and_the_capacity_is_measured(cluster: Cluster, tmp_path: Path) -> None:
    capacity = {}
    for n in (1, 2):
        cluster.scale_decoders(n)
        label = "compose-%d-decoder" % n
        run(
            [
                sys.executable,
                "-m",
                "stt",
                "bench",
                "--url",
                cluster.url,
                "--streams",
                "1,2,4,6,8,12",
                "--slo-ms",
                "1500",
                "--sentences",
                "3",
                "--no-floor",
                "--label",
                label,
                "--out",
                str(tmp_path),
            ],
            cluster.env,
            900,
        )
        report = json.loads((tmp_path / ("bench-%s.json" % label)).read_text())
        capacity[n] = {
            "capacity_at_slo": report["capacity_at_slo"],
            "p95_ms": {r["streams"]: r["e2e_final_ms"]["p95"] for r in report["results"]},
            "wer": {r["streams"]: r["wer"] for r in report["results"]},
        }
        for r in report["results"]:
            assert r["finals_missing"] == 0 and r["finals_duplicated"] == 0 and r["sessions_failed"] == 0, r
    # Capacity is measured and recorded, not asserted: it depends on the machine's cores.
    timings["decoders_1_vs_2"] = capacity
