"""The decoder loop against a real Redis and the real micro model, in this process."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import redis.asyncio as aioredis

from common import keys
from common.audio import float32_to_pcm16, pcm16_to_float32
from common.messages import JobKind, Result, encode_result
from common.settings import Settings
from decoder.engine import Engine
from stt.speech import synth
from tests.conftest import async_wait_for, make_settings
from tests.jobs import ResultCollector, put_job, running_worker, stream_state


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    texts = ["Hello there, this is a test.", "The quick brown fox jumps over the lazy dog.", "Please call Stella."]
    # The same rounding to PCM16 the service applies, so direct decodes see identical samples.
    return [pcm16_to_float32(float32_to_pcm16(synth(t))) for t in texts]


@pytest.fixture(scope="module")
def engine(micro_model: Path) -> Engine:
    e = Engine(make_settings(micro_model, "redis://127.0.0.1:1/0"))
    e.load()
    return e


def direct_text(engine: Engine, job, audio: np.ndarray) -> str:  # type: ignore[no-untyped-def]
    with engine.windowed(job, len(audio) / 16000) as lane:
        segments, _info = lane.model.transcribe(audio, **engine.options(job, len(audio) / 16000))
        return "".join(s.text for s in segments).strip()


async def test_final_equals_direct_transcribe(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    async with ResultCollector(aredis) as col:
        jobs = [await put_job(aredis, a, utt=i, prompt="earlier text" if i else "") for i, a in enumerate(speech)]
        async with running_worker(settings, engine):
            results = await col.wait(len(jobs))
    by_id = {r.id: r for r in results}
    texts = set()
    for job, audio in zip(jobs, speech):
        r = by_id[job.id]
        assert r.error is None and not r.no_speech
        assert r.text == direct_text(engine, job, audio)
        assert r.audio_s == pytest.approx(len(audio) / 16000, abs=1e-3)
        texts.add(r.text)
    assert len(texts) == len(jobs), "different audio should give different text"
    assert await stream_state(aredis) == {keys.STREAM_FINAL: (0, 0), keys.STREAM_INTERIM: (0, 0)}
    # Finals are cached for re-queued jobs.
    assert await aredis.exists(keys.result_key(jobs[0].id))


async def test_interim_keeps_forced_prefix(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    async with ResultCollector(aredis) as col, running_worker(settings, engine):
        job = await put_job(aredis, speech[1], kind="interim", prefix="the quick")
        [r] = await col.wait(1)
    assert r.kind == "interim" and r.rev == job.rev
    assert r.text.startswith("the quick")
    assert r.text == direct_text(engine, job, speech[1])


def record_runs(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str], float, float]]:
    """Every decode run of `engine`: (the lane thread, job kinds, start, end)."""
    runs: list[tuple[str, list[str], float, float]] = []
    original = engine.decode_many

    def decode_many(jobs: Any, contexts: Any = None, afters: Any = None, on_each: Any = None) -> Any:
        started = time.monotonic()
        try:
            return original(jobs, contexts, afters, on_each)
        finally:
            runs.append((threading.current_thread().name, [j.kind for j, _ in jobs], started, time.monotonic()))

    monkeypatch.setattr(engine, "decode_many", decode_many)
    return runs


async def test_finals_never_wait_behind_interims(
    settings: Settings,
    engine: Engine,
    aredis: aioredis.Redis,
    speech: list[np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = record_runs(engine, monkeypatch)
    async with ResultCollector(aredis) as col:
        for i in range(4):
            await put_job(aredis, speech[0], kind="interim", session="s%d" % i, utt=0)
        for i in range(3):
            await put_job(aredis, speech[2], kind="final", session="f%d" % i, utt=0)
        async with running_worker(settings.replace(DECODE_BATCH=4), engine):
            results = await col.wait(7)
    assert sorted(r.kind for r in results) == ["final"] * 3 + ["interim"] * 4
    # The finals' lane took the first at once, not after an interim run; on a CPU one per run
    # (a run of several costs their sum there, and each result would wait for the last).
    finals = [r for r in runs if "final" in r[1]]
    assert [len(r[1]) for r in finals] == [1, 1, 1] and finals[0][0].startswith("final")
    first_background_end = min(r[3] for r in runs if r[1][0] == "interim")
    assert finals[0][2] < first_background_end
    assert all(r[0].startswith("background") for r in runs if r[1][0] == "interim")


async def test_stale_interim_is_acked_not_decoded(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    async with ResultCollector(aredis) as col, running_worker(settings, engine) as worker:
        await put_job(aredis, speech[0], kind="interim", deadline=int(time.time() * 1000) - 1)
        await put_job(aredis, speech[0], kind="final", session="other")
        results = await col.wait(1)
        assert [r.kind for r in results] == ["final"]
        stale = worker.metrics.jobs.labels("interim", "stale_dropped")
        await async_wait_for(lambda: stale._value.get() >= 1, 10, "the stale interim to be dropped")
        assert stale._value.get() == 1
        assert worker.metrics.jobs.labels("interim", "done")._value.get() == 0
    assert len(col.results) == 1
    assert await stream_state(aredis) == {keys.STREAM_FINAL: (0, 0), keys.STREAM_INTERIM: (0, 0)}


async def test_interims_served_round_robin(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    s = settings.replace(DECODE_BATCH=4)
    async with ResultCollector(aredis) as col:
        # Session a has three interims waiting (only its newest is worth decoding), b and c one.
        for rev in range(3):
            await put_job(aredis, speech[0], kind="interim", session="a", rev=rev)
        await put_job(aredis, speech[0], kind="interim", session="b")
        await put_job(aredis, speech[0], kind="interim", session="c")
        async with running_worker(s, engine) as worker:
            results = await col.wait(3)
            assert worker.metrics.jobs.labels("interim", "superseded")._value.get() == 2
    assert sorted(r.session for r in results) == ["a", "b", "c"]
    assert next(r for r in results if r.session == "a").rev == 2


@pytest.mark.parametrize("case", ["missing_key", "wrong_type", "empty_range", "truncated", "odd_bytes", "model_error"])
async def test_bad_job_gets_error_result_and_loop_goes_on(
    case: str,
    settings: Settings,
    engine: Engine,
    aredis: aioredis.Redis,
    speech: list[np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    audio = speech[0]
    # A final whose audio is missing or short waits for its gateway for AUDIO_WAIT_S (the test
    # below); with 0 it fails at once, as any other bad audio.
    settings = settings.replace(AUDIO_WAIT_S=0.0)
    if case == "model_error":
        real = engine.model.transcribe

        def failing(audio, **kwargs):  # type: ignore[no-untyped-def]
            if kwargs.get("initial_prompt") == engine._tokens("explode"):
                raise RuntimeError("CUDA failed with error out of memory")
            return real(audio, **kwargs)

        monkeypatch.setattr(engine.model, "transcribe", failing)
    async with ResultCollector(aredis) as col, running_worker(settings, engine):
        if case == "missing_key":
            bad = await put_job(aredis, None, audio_end=3200, utt=0)
        elif case == "wrong_type":  # a poison job: its audio key is a hash (WRONGTYPE)
            await aredis.hset(keys.audio_key("s1", 0), "x", "y")
            bad = await put_job(aredis, None, audio_end=3200, utt=0)
        elif case == "empty_range":
            bad = await put_job(aredis, audio, audio_end=0, utt=0)
        elif case == "truncated":
            bad = await put_job(aredis, audio, audio_end=len(audio) * 2 + 3200, utt=0)
        elif case == "odd_bytes":
            bad = await put_job(aredis, audio, audio_end=3201, utt=0)
        else:
            bad = await put_job(aredis, audio, prompt="explode", utt=0)
        good = await put_job(aredis, audio, utt=1)
        results = await col.wait(2)
    by_id = {r.id: r for r in results}
    assert by_id[bad.id].error and by_id[bad.id].utt == 0
    assert by_id[good.id].error is None and by_id[good.id].text
    assert await stream_state(aredis) == {keys.STREAM_FINAL: (0, 0), keys.STREAM_INTERIM: (0, 0)}


async def test_a_final_whose_audio_redis_lacks_is_left_to_its_gateway_which_writes_it_again(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    """After a failover the job survived but the newest audio did not: no error result (the
    utterance is not lost), and the gateway's re-queue with the audio written again decodes it."""
    pcm = float32_to_pcm16(speech[0])
    key = keys.audio_key("s1", 0)
    async with ResultCollector(aredis) as col, running_worker(settings, engine) as worker:
        await aredis.set(key, pcm[: len(pcm) // 2])  # what the promoted replica had
        job = await put_job(aredis, None, audio_end=len(pcm), utt=0)
        await async_wait_for(
            lambda: worker.metrics.jobs.labels("final", "audio_missing")._value.get() >= 1, 20, "the job left"
        )
        assert await stream_state(aredis) == {keys.STREAM_FINAL: (0, 0), keys.STREAM_INTERIM: (0, 0)}
        assert col.results == []
        await aredis.setrange(key, 0, pcm)  # the gateway's copy, written again
        again = await put_job(aredis, None, audio_end=len(pcm), utt=0)
        [r] = await col.wait(1)
    assert again.id == job.id and r.id == job.id and r.error is None and r.text


@pytest.mark.parametrize(
    "payload", [b"\xc1not msgpack", msgpack.packb({"v": 99, "id": "x"}), msgpack.packb([1, 2, 3]), None]
)
async def test_unreadable_entry_is_dead_lettered(
    payload: bytes | None, settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    async with ResultCollector(aredis) as col, running_worker(settings, engine) as worker:
        fields: dict[Any, Any] = {keys.JOB_FIELD: payload} if payload is not None else {b"other": b"1"}
        await aredis.xadd(keys.STREAM_FINAL, fields)
        good = await put_job(aredis, speech[0], utt=1)
        [r] = await col.wait(1)
        assert r.id == good.id and r.error is None
        assert worker.metrics.jobs.labels("final", "dead")._value.get() == 1
    dead: Any = await aredis.xrange(keys.STREAM_DEAD)
    assert len(dead) == 1 and dead[0][1][b"reason"]
    assert await stream_state(aredis) == {keys.STREAM_FINAL: (0, 0), keys.STREAM_INTERIM: (0, 0)}


async def test_repeated_job_id_answered_from_cache(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    async with ResultCollector(aredis) as col, running_worker(settings, engine) as worker:
        job = await put_job(aredis, speech[0], utt=0)
        await col.wait(1)
        await put_job(aredis, speech[0], utt=0)  # the gateway's re-queue: same id
        results = await col.wait(2)
        assert worker.metrics.jobs.labels("final", "cached")._value.get() == 1
        assert worker.metrics.jobs.labels("final", "done")._value.get() == 1
    assert results[0].id == results[1].id == job.id
    assert results[0].text == results[1].text


async def test_word_timestamps_are_session_times(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    async with ResultCollector(aredis) as col, running_worker(settings, engine):
        await put_job(aredis, speech[1], word_timestamps=True, t0=10.0)
        [r] = await col.wait(1)
    assert r.words, r
    assert all(10.0 <= w["start"] <= w["end"] <= 10.0 + r.audio_s + 0.05 for w in r.words)
    assert "".join(w["word"] for w in r.words).strip() == r.text


async def test_auto_language_is_detected(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    async with ResultCollector(aredis) as col, running_worker(settings, engine):
        await put_job(aredis, speech[0], lang=None)
        [r] = await col.wait(1)
    # The random test model is English-only to CTranslate2, so detection answers "en" here; a
    # real multilingual model detects (faster-whisper's detect_language) on the same path.
    assert r.error is None and r.language == "en"


async def test_metrics_queue_depth_agrees_with_redis(
    settings: Settings, aredis: aioredis.Redis, sredis: Any, speech: list[np.ndarray]
) -> None:
    import httpx

    from decoder.metrics import DecoderMetrics

    for i in range(5):
        await put_job(aredis, speech[2], utt=i)
    for i in range(3):
        await put_job(aredis, speech[2], kind="interim", utt=i, session="q")
    await aredis.xgroup_create(keys.STREAM_FINAL, keys.GROUP, id="0", mkstream=True)
    # Two finals delivered but not acknowledged: still in flight, so still counted.
    await aredis.xreadgroup(keys.GROUP, "someone", {keys.STREAM_FINAL: ">"}, count=2)
    metrics = DecoderMetrics()
    port = metrics.serve(0, settings.redis_url, host="127.0.0.1")
    try:
        body = httpx.get("http://127.0.0.1:%d/metrics" % port, timeout=5).text
    finally:
        metrics.close()
    info = {
        g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g
        for g in sredis.xinfo_groups(keys.STREAM_FINAL)
    }
    undelivered = 5 - 2
    assert info[keys.GROUP]["pending"] == 2
    assert 'stt_queue_depth{stream="stt:jobs:final"} %.1f' % (undelivered + 2) in body
    assert 'stt_queue_depth{stream="stt:jobs:interim"} 3.0' in body
    assert "stt_queue_oldest_age_seconds" in body and "stt_redis_up 1.0" in body


async def test_the_probes_say_live_and_ready_while_the_worker_takes_jobs(settings: Settings, engine: Engine) -> None:
    import httpx

    from decoder.metrics import DecoderMetrics

    metrics = DecoderMetrics()
    port = metrics.serve(0, settings.redis_url, host="127.0.0.1")
    url = "http://127.0.0.1:%d" % port
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http, running_worker(settings, engine) as worker:
            metrics.not_ready = worker.not_ready
            assert (await http.get("/health")).json() == {"ok": True}

            async def ready() -> bool:
                return (await http.get("/ready")).status_code == 200

            await async_wait_for(ready, 20, "/ready once the heartbeat is written")
            worker.stop.request()
            stopping = await http.get("/ready")
            assert stopping.status_code == 503 and stopping.json()["reason"] == "stopping"
            assert "stt_jobs_total" in (await http.get("/metrics")).text
    finally:
        metrics.close()


async def test_the_consumers_of_dead_decoders_are_removed(aredis: aioredis.Redis) -> None:
    from decoder.streams import JobStreams

    streams = JobStreams(aredis, "alive")
    await streams.ensure_groups()
    for consumer in ("dead-one", "dead-holding"):
        await put_job(aredis, np.zeros(1600, np.float32) + 0.01, session=consumer)
        await aredis.xreadgroup(keys.GROUP, consumer, {keys.STREAM_FINAL: ">"}, count=1)
    entries: Any = await aredis.xrange(keys.STREAM_FINAL)
    first = entries[0][0]
    await aredis.xack(keys.STREAM_FINAL, keys.GROUP, first)  # dead-one finished its job, then died
    removed = await streams.prune_consumers(min_idle_ms=0)
    assert "%s/dead-one" % keys.STREAM_FINAL in removed
    names = {c["name"] for c in await aredis.xinfo_consumers(keys.STREAM_FINAL, keys.GROUP)}
    assert names == {b"dead-holding"}  # it still holds an entry: claimed first, removed later


async def test_a_job_that_kills_its_decoder_is_dead_lettered_when_it_comes_back_under_its_name(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    """Decoder dec-x took a final and died with it in hand, as often as MAX_DELIVERIES allows
    (each restart claimed it again). Back under the same name it does not decode it a fourth
    time: the job is dead-lettered and its utterance gets an error."""
    await aredis.xgroup_create(keys.STREAM_FINAL, keys.GROUP, id="0", mkstream=True)
    async with ResultCollector(aredis) as col:
        job = await put_job(aredis, speech[0], utt=0)
        reply: Any = await aredis.xreadgroup(keys.GROUP, "dec-x", {keys.STREAM_FINAL: ">"}, count=1)
        [[_, [(entry_id, _)]]] = reply
        for _ in range(settings.MAX_DELIVERIES - 1):
            await aredis.xclaim(keys.STREAM_FINAL, keys.GROUP, "dec-x", 0, [entry_id])
        good = await put_job(aredis, speech[1], utt=1)
        async with running_worker(settings.replace(DECODER_ID="dec-x"), engine) as worker:
            results = {r.id: r for r in await col.wait(2)}
            assert worker.metrics.jobs.labels("final", "dead")._value.get() == 1
    assert "dead-lettered" in (results[job.id].error or "")
    assert results[good.id].error is None
    dead: Any = await aredis.xrange(keys.STREAM_DEAD)
    assert [int(fields[b"deliveries"]) for _, fields in dead] == [settings.MAX_DELIVERIES + 1]
    assert await stream_state(aredis) == {keys.STREAM_FINAL: (0, 0), keys.STREAM_INTERIM: (0, 0)}


async def test_a_decode_longer_than_claim_idle_is_not_taken_by_another_decoder(
    settings: Settings,
    engine: Engine,
    aredis: aioredis.Redis,
    speech: list[np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two decoders claim entries idle for 200 ms; a decode takes a second. The decoder that has
    the job keeps it claimed while it decodes: it is decoded once, never reclaimed."""
    real = engine.decode_many

    def slow(*args: Any) -> Any:
        time.sleep(1.0)
        return real(*args)

    monkeypatch.setattr(engine, "decode_many", slow)
    s = settings.replace(CLAIM_IDLE_MS=200)
    async with ResultCollector(aredis) as col:
        async with running_worker(s.replace(DECODER_ID="dec-a"), engine) as a:
            async with running_worker(s.replace(DECODER_ID="dec-b"), engine) as b:
                job = await put_job(aredis, speech[0], utt=0)
                [r] = await col.wait(1)
                await async_wait_for(lambda: a._jobs_done + b._jobs_done >= 1, 10, "the job counted")
                workers = (a, b)
        assert r.id == job.id and r.error is None
    for outcome in ("reclaimed", "dead"):
        assert sum(w.metrics.jobs.labels("final", outcome)._value.get() for w in workers) == 0, outcome
    assert sum(w.metrics.jobs.labels("final", "done")._value.get() for w in workers) == 1


async def test_file_jobs_share_the_background_lane_with_interims(
    settings: Settings,
    engine: Engine,
    aredis: aioredis.Redis,
    speech: list[np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = record_runs(engine, monkeypatch)
    s = settings.replace(DECODE_BATCH=1, BATCH_SHARE=0.5, BATCH_WAIT_MS=0)
    async with ResultCollector(aredis) as col:
        for i in range(3):
            await put_job(aredis, speech[1], kind="batch", session="file", utt=i)
        for i in range(3):
            await put_job(aredis, speech[0], kind="interim", session="s%d" % i)
        for i in range(2):
            await put_job(aredis, speech[2], kind="final", session="f%d" % i)
        async with running_worker(s, engine):
            results = await col.wait(8)
    assert sorted(r.kind for r in results) == ["batch"] * 3 + ["final"] * 2 + ["interim"] * 3
    assert [r.utt for r in results if r.kind == "batch"] == [0, 1, 2]
    assert all(r.error is None for r in results)
    # File parts and interims take turns on the background lane (by time: decoder/scheduler.py);
    # finals never go there.
    background = [r[1][0] for r in runs if r[0].startswith("background")]
    assert sorted(background) == ["batch"] * 3 + ["interim"] * 3
    assert background[:2] != ["batch", "batch"] and background[:2] != ["interim", "interim"], background
    assert all(r[0].startswith("final") for r in runs if r[1][0] == "final")
    assert await stream_state(aredis) == {keys.STREAM_FINAL: (0, 0), keys.STREAM_INTERIM: (0, 0)}
    assert await aredis.xlen(keys.STREAM_BATCH) == 0


async def test_a_file_job_held_by_a_dead_decoder_is_claimed(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    s = settings.replace(CLAIM_IDLE_MS=200)
    async with ResultCollector(aredis) as col:
        job = await put_job(aredis, speech[1], kind="batch", session="file", utt=0)
        await aredis.xgroup_create(keys.STREAM_BATCH, keys.GROUP, id="0", mkstream=True)
        # A decoder that read the part and died before answering: it stays in its pending list.
        taken: Any = await aredis.xreadgroup(keys.GROUP, "dead-decoder", {keys.STREAM_BATCH: ">"}, count=1)
        assert taken and taken[0][1]
        async with running_worker(s, engine) as worker:
            [result] = await col.wait(1)
            assert worker.metrics.jobs.labels("batch", "reclaimed")._value.get() == 1
    assert result.id == job.id and result.error is None and result.text
    assert await aredis.xlen(keys.STREAM_BATCH) == 0


# --- speculative finals and the final lane's gate ----------------------------------------------


async def test_a_speculative_job_decodes_what_its_final_would(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    async with ResultCollector(aredis) as col:
        guess = await put_job(aredis, speech[1], kind="speculative", id="s1:0:s1", prompt="earlier text")
        final = await put_job(aredis, speech[1], kind="final", id="s1:0:f", prompt="earlier text")
        async with running_worker(settings, engine):
            results = {r.id: r for r in await col.wait(2)}
    assert results[guess.id].kind == "speculative" and results[final.id].kind == "final"
    assert results[guess.id].text == results[final.id].text == direct_text(engine, final, speech[1])
    assert await aredis.exists(keys.result_key(guess.id))  # cached like a final's


async def test_a_final_and_its_speculative_job_are_decoded_once(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    async with ResultCollector(aredis) as col:
        guess = await put_job(aredis, speech[1], kind="speculative", id="s1:0:s9")
        await put_job(aredis, speech[1], kind="final", id=guess.id)  # the endpoint confirmed it
        async with running_worker(settings, engine) as worker:
            [first] = await col.wait(1)
            done = sum(worker.metrics.jobs.labels(k, "done")._value.get() for k in ("final", "speculative"))
            cached = worker.metrics.jobs.labels

            def both_acknowledged() -> bool:
                return bool(cached("final", "cached")._value.get() + cached("speculative", "cached")._value.get())

            await async_wait_for(both_acknowledged, 10, "the second entry of the job id to be acknowledged")
    assert first.id == guess.id and first.error is None and done == 1
    assert await aredis.xlen(keys.STREAM_FINAL) == 0 and await aredis.xlen(keys.STREAM_SPECULATIVE) == 0
    assert not await aredis.exists(keys.decoding_key(guess.id))


async def test_cancelled_and_late_speculation_is_dropped_undecoded(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    await aredis.set(keys.cancelled_key("s1:0:s1"), 1)
    await put_job(aredis, speech[1], kind="speculative", id="s1:0:s1", deadline=int(time.time() * 1000) + 60_000)
    await put_job(aredis, speech[1], kind="speculative", id="s2:0:s1", session="s2", deadline=1)
    async with ResultCollector(aredis) as col, running_worker(settings, engine) as worker:
        jobs = worker.metrics.jobs
        await async_wait_for(
            lambda: (
                jobs.labels("speculative", "cancelled")._value.get() == 1
                and jobs.labels("speculative", "shed")._value.get() == 1
            ),
            10,
            "both to be dropped",
        )
        assert jobs.labels("speculative", "done")._value.get() == 0 and col.results == []
    assert await aredis.xlen(keys.STREAM_SPECULATIVE) == 0


@pytest.mark.parametrize("other_finishes", [True, False])
async def test_a_final_another_decoder_is_decoding_waits_for_that_result(
    other_finishes: bool, settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    job_id = "s1:0:s5"
    # Another decoder holds the job id's decoding lease (it took the speculative job).
    await aredis.set(keys.decoding_key(job_id), "other-decoder", px=60_000 if other_finishes else 1500)
    async with ResultCollector(aredis) as col:
        final = await put_job(aredis, speech[1], kind="final", id=job_id)
        async with running_worker(settings, engine) as worker:
            await async_wait_for(lambda: bool(worker.gate.parked), 10, "the final to be parked")
            if other_finishes:
                theirs = Result.answering(final, text="their words", decoder="other-decoder")
                await aredis.set(keys.result_key(job_id), encode_result(theirs))
                await aredis.delete(keys.decoding_key(job_id))
            [result] = await col.wait(1)
            decoded = worker.metrics.jobs.labels("final", "done")._value.get()
    if other_finishes:
        assert result.text == "their words" and decoded == 0  # not decoded twice
    else:
        # The other decoder stopped without a result: its lease lapsed, the final was decoded here.
        assert result.decoder == settings.decoder_id and decoded == 1
    assert await aredis.xlen(keys.STREAM_FINAL) == 0


async def test_a_parked_final_stays_this_decoders_and_is_delivered_once(
    micro_model: Path, redis_url: str, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    """A final parked for longer than CLAIM_IDLE_MS (another decoder's lease outlives it) is
    kept claimed like one being decoded: no decoder, this one included, claims it as idle, so
    it is decoded and delivered once, on its first delivery."""
    settings = make_settings(micro_model, redis_url, CLAIM_IDLE_MS=200)
    job_id = "s1:0:s6"
    await aredis.set(keys.decoding_key(job_id), "other-decoder", px=2000)
    async with ResultCollector(aredis) as col:
        await put_job(aredis, speech[1], kind="final", id=job_id)
        async with running_worker(settings, engine) as worker:
            await async_wait_for(lambda: bool(worker.gate.parked), 10, "the final to be parked")
            await col.wait(1)

            async def settled() -> bool:
                state = await stream_state(aredis)
                return state[keys.STREAM_FINAL] == (0, 0) and not worker.gate.parked and not worker.scheduler.finals

            await async_wait_for(settled, 10, "the final to be acknowledged and nothing else held")
            jobs = worker.metrics.jobs
            decoded, reclaimed = (jobs.labels("final", k)._value.get() for k in ("done", "reclaimed"))
            delivered_again = jobs.labels("final", "cached")._value.get()
    assert [r.id for r in col.results] == [job_id]
    assert (decoded, reclaimed, delivered_again) == (1, 0, 0)


async def test_an_entry_claimed_back_while_in_hand_is_held_once(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    """After a Redis outage the loop claims its own pending entries again; one it still holds
    (read and not yet run) is not queued a second time, so it is decoded once."""
    from decoder.worker import DecoderWorker

    await put_job(aredis, speech[1], kind="final")
    worker = DecoderWorker(settings, engine)
    try:
        await worker.streams.ensure_groups()
        await worker._admit(await worker.streams.read((JobKind.FINAL,), 1, None))
        await worker._admit(await worker.streams.claim_own_pending(4))
        assert len(worker.scheduler.finals) == 1
    finally:
        await worker._shutdown()


class BrokenGpu:
    """The real engine as a GPU whose CUDA context broke after ready: every decode fails with a
    sticky CUDA error."""

    device = "cuda"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def decode_many(self, items: Any, contexts: Any = None, afters: Any = None, on_each: Any = None) -> Any:
        from common.errors import DecodeError

        self.calls += 1
        out = [DecodeError("CUDA failed with error an illegal memory access was encountered") for _ in items]
        for i, o in enumerate(out):
            if on_each is not None:
                on_each(i, o)
        return out


async def test_a_gpu_failing_job_after_job_stops_the_decoder_and_leaves_its_jobs_to_another(
    settings: Settings, engine: Engine, aredis: aioredis.Redis, speech: list[np.ndarray]
) -> None:
    # Idle entries are claimed after 2 s: the broken decoder stops well before it could take its
    # own left jobs back.
    s = settings.replace(CLAIM_IDLE_MS=2000, DECODE_BATCH=1)
    broken = BrokenGpu(engine)
    async with ResultCollector(aredis) as col:
        async with running_worker(s.replace(DECODER_ID="dec-broken"), broken) as a:
            jobs = [await put_job(aredis, speech[i % 3], utt=i) for i in range(4)]
            await async_wait_for(lambda: a.stop.requested, 20, "the broken decoder to stop")
            reason = a.not_ready()
            assert reason and "device errors in a row" in reason and "illegal memory access" in reason
            assert a.failed == reason
            assert a.metrics.jobs.labels("final", "device_error")._value.get() == 3
        assert col.results == [], "no job was answered with the device's error"
        async with running_worker(s.replace(DECODER_ID="dec-good"), engine):
            results = await col.wait(len(jobs), timeout=60)
    assert sorted(r.id for r in results) == sorted(j.id for j in jobs)
    assert all(r.error is None and r.text for r in results)


def test_the_breaker_counts_only_a_devices_errors_in_a_row() -> None:
    from decoder.breaker import DeviceBreaker, Verdict

    b = DeviceBreaker(on_device=True, limit=3)
    cuda = "CUDA failed with error an illegal memory access was encountered"
    assert [b.record(e) for e in (cuda, cuda, None, cuda, "audio: truncated", cuda)] == [
        Verdict.LEAVE, Verdict.LEAVE, Verdict.OK, Verdict.LEAVE, Verdict.OK, Verdict.LEAVE
    ]  # fmt: skip
    assert b.record(cuda) is Verdict.TRIP and b.tripped and "3 device errors in a row" in b.tripped
    assert b.record(None) is Verdict.OK and b.record(cuda) is Verdict.TRIP, "once tripped, it stays"
    cpu = DeviceBreaker(on_device=False)
    assert all(cpu.record(cuda) is Verdict.OK for _ in range(5)) and cpu.tripped is None
