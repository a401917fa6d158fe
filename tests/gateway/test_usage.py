"""Usage per tenant and UTC day (live audio, sessions, files, finals) through a real gateway and
decoder, read back with GET /v1/usage and `stt usage`; the audit log's lines; the meter across
a UTC day boundary (an injected clock)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
import soundfile as sf
import websockets

from gateway.metrics import GatewayMetrics
from gateway.store.usage import UsageStore
from gateway.transport.keyfile import Tenant
from gateway.transport.keyring import ANONYMOUS, Caller
from gateway.transport.metering import Meter
from stt.cli import main as stt_main
from stt.speech import SENTENCES, conversation
from tests.conftest import async_wait_for
from tests.gateway.conftest import gateway_settings, serve_gateway
from tests.jobs import running_worker

KEYS = """
[[key]]
name = "bot"
key = "bot-secret"

[[key]]
name = "notes"
key = "notes-secret"

[[key]]
name = "ops"
key = "ops-secret"
admin = true
"""


async def test_usage_counts_what_each_tenant_sent_and_the_audit_log_says_it_once(
    tmp_path: Path, micro_model: Path, micro_engine: Any, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    keys_file, audit = tmp_path / "keys.toml", tmp_path / "audit.log"
    keys_file.write_text(KEYS)
    settings = gateway_settings(
        micro_model, redis_url, API_KEYS_FILE=str(keys_file), AUDIT_LOG=str(audit), DECODE_BATCH=2
    )
    speech = conversation(list(SENTENCES[:2]), tail_s=1.0)
    pcm = speech.pcm16
    async with serve_gateway(settings) as gw, running_worker(settings, micro_engine):
        await async_wait_for(lambda: gw.state.decoders, 10, "the decoder's heartbeat")
        async with websockets.connect(gw.url, additional_headers={"authorization": "Bearer bot-secret"}) as ws:
            await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "interim": False}))
            for i in range(0, len(pcm), 3200):
                await ws.send(pcm[i : i + 3200])
            await ws.send(json.dumps({"op": "stop"}))
            msgs = [json.loads(m) async for m in ws]
        finals = [m for m in msgs if m["type"] == "final"]
        assert msgs[-1]["type"] == "done" and finals
        buf = io.BytesIO()
        sf.write(buf, np.frombuffer(pcm, "<i2")[: 16000 * 3], 16000, format="WAV", subtype="PCM_16")
        async with httpx.AsyncClient(base_url=gw.http, timeout=60) as http:
            r = await http.post(
                "/v1/audio/transcriptions",
                headers={"authorization": "Bearer notes-secret", "x-request-id": "notes-file-1"},
                files={"file": ("a.wav", buf.getvalue(), "audio/wav")},
                data={"model": "whisper-1"},
            )
            assert r.status_code == 200, r.text
            mine = (await http.get("/v1/usage", headers={"authorization": "Bearer bot-secret"})).json()
            everyone = (await http.get("/v1/usage", headers={"authorization": "Bearer ops-secret"})).json()
            assert (await http.get("/v1/usage")).status_code == 401
            for query, param in (("from=2026-13-01", "from"), ("from=yesterday", "from"), ("to=2026-1-1", "to")):
                bad = await http.get("/v1/usage?" + query, headers={"authorization": "Bearer ops-secret"})
                assert bad.status_code == 400 and bad.json()["error"]["param"] == param, query
            back = await http.get(
                "/v1/usage?from=2026-12-02&to=2026-12-01", headers={"authorization": "Bearer ops-secret"}
            )
            assert back.status_code == 400 and back.json()["error"]["param"] == "to"
            assert "before" in back.json()["error"]["message"]
        # `stt usage` prints the same, as a table (http.client in a thread: the gateway is this loop's).
        capsys.readouterr()
        assert await asyncio.to_thread(stt_main, ["usage", "--url", gw.http, "--api-key", "ops-secret"]) == 0
        table = capsys.readouterr().out
        assert "tenant" in table and "\nbot " in table and "\nnotes " in table and "audio hours" in table
    [bot] = mine["usage"]
    assert bot["tenant"] == "bot" and bot["sessions"] == 1 and bot["files"] == 0 and bot["finals"] == len(finals)
    assert abs(bot["audio_seconds"] - speech.duration) <= 0.02 * speech.duration
    rows = {r["tenant"]: r for r in everyone["usage"]}
    assert set(rows) == {"bot", "notes"}  # the admin sees every tenant with usage
    assert rows["notes"]["files"] == 1 and abs(rows["notes"]["audio_seconds"] - 3.0) <= 0.06
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    session = next(line for line in lines if line["event"] == "session")
    assert session["tenant"] == "bot" and session["protocol"] == "native" and session["ended"] == "ended"
    assert session["finals"] == len(finals) and abs(session["audio_seconds"] - speech.duration) < 0.05
    assert session["client"] == "127.0.0.1" and session["start"] < session["end"]
    file = next(line for line in lines if line["event"] == "file")
    assert file["tenant"] == "notes" and file["id"] == "notes-file-1" and file["ended"] == "ok"
    text = audit.read_text()
    assert "secret" not in text and not any(m["text"] and m["text"] in text for m in finals)
    assert len([line for line in lines if line["event"] == "session"]) == 1
    rc = await asyncio.to_thread(stt_main, ["usage", "--url", "http://127.0.0.1:1", "--api-key", "x"])
    assert rc == 69  # nobody there: said, not a traceback


async def test_the_meter_counts_each_utc_day_apart_and_keeps_counts_redis_refused(aredis: aioredis.Redis) -> None:
    now = [1764806399.5]  # 2025-12-03 23:59:59.5 UTC
    meter = Meter(UsageStore(aredis), GatewayMetrics(), clock=lambda: now[0])
    bot = Caller(Tenant("bot", b"x" * 32))
    meter.count(bot, "audio_seconds", 0.4)
    meter.count(ANONYMOUS, "sessions")
    now[0] += 1.0  # past midnight
    meter.count(bot, "audio_seconds", 0.6)
    await meter.flush()
    rows = await meter.store.read(["bot", "_unnamed"], ["2025-12-03", "2025-12-04"])
    assert [(r["tenant"], r["day"], r["audio_seconds"], r["sessions"]) for r in rows] == [
        ("bot", "2025-12-03", 0.4, 0),
        ("bot", "2025-12-04", 0.6, 0),
        ("_unnamed", "2025-12-03", 0.0, 1),
    ]
    assert 0 < await aredis.ttl("stt:usage:bot:2025-12-03") <= 90 * 86400

    class Down:
        async def add(self, counts: Any) -> None:
            from redis.exceptions import ConnectionError

            raise ConnectionError("down")

    store = meter.store
    meter.store = Down()  # type: ignore[assignment]
    meter.count(bot, "finals", 2)
    await meter.flush()
    meter.store = store
    await meter.flush()
    rows = await meter.store.read(["bot"], ["2025-12-04"])
    assert rows[0]["finals"] == 2


async def test_a_day_of_audio_used_up_ends_the_session_after_its_finals_and_the_next_day_starts_afresh(
    tmp_path: Path, micro_model: Path, micro_engine: Any, redis_url: str
) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text('[[key]]\nname = "metered"\nkey = "metered-secret"\naudio_seconds_per_day = 3\n')
    settings = gateway_settings(micro_model, redis_url, API_KEYS_FILE=str(keys_file))
    metered = {"authorization": "Bearer metered-secret"}
    pcm = conversation(list(SENTENCES[:2]), tail_s=1.0).pcm16  # about 7 s
    async with serve_gateway(settings) as gw, running_worker(settings, micro_engine):
        await async_wait_for(lambda: gw.state.decoders, 10, "the decoder's heartbeat")
        async with websockets.connect(gw.url, additional_headers=metered) as ws:
            await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "interim": False}))

            async def send() -> None:
                for i in range(0, len(pcm), 3200):
                    await ws.send(pcm[i : i + 3200])

            sender = asyncio.create_task(send())
            msgs = []
            with contextlib.suppress(websockets.ConnectionClosed):
                async for m in ws:
                    msgs.append(json.loads(m))
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await sender
            assert ws.close_code == 4429
        kinds = [m["type"] for m in msgs]
        assert kinds[-1] == "error" and msgs[-1]["code"] == "insufficient_quota", kinds
        assert "audio_seconds_per_day" in msgs[-1]["message"]
        assert "final" in kinds[:-1]  # the audio accepted before was decoded and its finals sent first
        await gw.state.meter.flush()
        used = gw.state.meter.used("metered")
        assert 3.0 <= used <= 3.0 + 0.25, used  # at most the chunk that crossed the limit
        # The rest of the day: refused at the start, on every wire.
        async with websockets.connect(gw.url, additional_headers=metered) as ws:
            await ws.send(json.dumps({"op": "start", "sample_rate": 16000}))
            refused = json.loads(await ws.recv())
            assert refused["code"] == "insufficient_quota"
        url = gw.url.replace("/v1/listen", "/v1/realtime?intent=transcription")
        async with websockets.connect(url, additional_headers=metered) as ws:
            assert json.loads(await ws.recv())["error"]["code"] == "insufficient_quota"
        async with httpx.AsyncClient(base_url=gw.http) as http:
            r = await http.post(
                "/v1/audio/transcriptions", headers=metered, files={"file": ("a.wav", b"x" * 100, "audio/wav")}
            )
        assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
        assert 0 < int(r.headers["retry-after"]) <= 86401
        # A new UTC day (the gateway's clock moved past midnight): the tenant starts afresh.
        real = gw.state.meter.clock
        gw.state.meter.clock = lambda: real() + 86400
        async with websockets.connect(gw.url, additional_headers=metered) as ws:
            await ws.send(json.dumps({"op": "start", "sample_rate": 16000}))
            assert json.loads(await ws.recv())["type"] == "started"
