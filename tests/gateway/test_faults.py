"""Failures stay loud and contained: a bad result, a session whose handling breaks, a dead
task, a signal. Nothing fails silently and no final is lost without an error naming it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from typing import Any

import httpx
import msgpack
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from common import keys
from common.messages import SCHEMA_VERSION
from stt.speech import SENTENCES, conversation
from tests.conftest import async_wait_for
from tests.gateway.conftest import Cluster, Gateway
from tests.gateway.wsclient import check_invariants, finals, run_session


async def test_a_malformed_result_is_logged_and_results_keep_flowing(
    gateway: Gateway, aredis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    speech = conversation([SENTENCES[0]], tail_s=1.0)
    channel = keys.results_channel(gateway.settings.GATEWAY_ID)
    bad = {"v": SCHEMA_VERSION, "id": "x", "kind": "final", "session": 123, "utt": 0}
    with caplog.at_level(logging.ERROR, logger="gateway.transport.router"):
        assert await aredis.publish(channel, msgpack.packb(bad)) == 1
        await async_wait_for(lambda: "field session has type int" in caplog.text, 10, "the bad result logged")
    msgs = await run_session(gateway.url, speech.pcm16, start={"interim": False})
    check_invariants(msgs)
    assert len(finals(msgs)) == 1


async def test_a_session_whose_result_handling_breaks_ends_alone_with_its_finals_as_errors(gateway: Gateway) -> None:
    speech = conversation(list(SENTENCES[:2]), pause_s=1.0, tail_s=1.0)
    broken: list[str] = []

    async def break_first_session() -> None:
        session = next(iter(gateway.state.router.sessions.values()))
        broken.append(session.id)

        def on_result(result: Any) -> None:
            raise RuntimeError("a bug in result handling")

        session.on_result = on_result  # type: ignore[method-assign]

    async with websockets.connect(gateway.url) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "lang": "en", "interim": False}))
        assert json.loads(await ws.recv())["type"] == "started"
        await break_first_session()
        other = asyncio.create_task(run_session(gateway.url, speech.pcm16, start={"interim": False}))
        with contextlib.suppress(ConnectionClosed):  # it is closed once its first result breaks it
            for i in range(0, len(speech.pcm16), 3200):
                await ws.send(speech.pcm16[i : i + 3200])
        got = []
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                got.append(json.loads(raw))
        close_code = ws.close_code
    errors = [m for m in got if m["type"] == "error"]
    assert [m["code"] for m in errors][:1] == ["final_failed"] and errors[0]["utterance"] == 0
    assert errors[-1]["code"] == "internal" and close_code == 1011
    msgs = await asyncio.wait_for(other, 60)
    check_invariants(msgs)
    assert len(finals(msgs)) == 2
    assert broken[0] not in gateway.state.router.sessions


@pytest.mark.parametrize("gateway", [{"decoder": "none"}], indirect=True)
async def test_a_dead_task_fails_ready_and_stops_the_gateway(gateway: Gateway) -> None:
    async def doomed() -> None:
        raise RuntimeError("boom")

    assert gateway.state.watchdog is not None
    gateway.state.watchdog.start(doomed(), "doomed")
    await async_wait_for(lambda: gateway.server.failed, 10, "the failure seen")
    assert "doomed" in (gateway.server.failed or "") and gateway.server.should_exit
    async with httpx.AsyncClient() as http:
        # It may be gone already (it is stopping); if it still answers, it is not ready.
        try:
            ready = await http.get(gateway.http + "/ready", timeout=2)
            assert ready.status_code == 503 and "doomed" in ready.json()["reason"]
        except httpx.TransportError:
            pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_graceful_signal_is_a_clean_exit_for_gateway_and_decoder(cluster: Cluster, sig: int) -> None:
    for proc in (cluster.gateway, cluster.decoder):
        proc.signal(sig)
        assert await asyncio.to_thread(proc.wait, 30) == 0, proc.output()[-3000:]
        assert "Traceback" not in proc.output() and "KeyboardInterrupt" not in proc.output()
