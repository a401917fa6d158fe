"""POST /v1/audio/transcriptions through a real gateway and decoder, with the official OpenAI
client pointed at it (base_url), on the real tiny.en."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import soundfile as sf

from common import keys
from gateway.files.upload import PARTS_AHEAD
from stt.speech import SENTENCES, Speech, conversation, joined
from stt.wer import wer
from tests.conftest import JFK, JFK_TEXT, REAL_MODEL, async_wait_for
from tests.gateway.conftest import Gateway
from tests.realspeech import direct_text, utterance

REAL = {"MODEL_NAME": REAL_MODEL}


def client(gw: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.http + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_the_openai_client_gets_every_format(gateway: Gateway) -> None:
    async with client(gateway) as oa:
        await every_format(oa)


async def every_format(oa: openai.AsyncOpenAI) -> None:
    with JFK.open("rb") as f:
        plain = await oa.audio.transcriptions.create(model="whisper-1", file=f)
    assert wer(JFK_TEXT, plain.text) <= 0.15, plain.text
    with JFK.open("rb") as f:
        verbose = await oa.audio.transcriptions.create(
            model="whisper-1", file=f, response_format="verbose_json", timestamp_granularities=["word", "segment"]
        )
    assert wer(JFK_TEXT, verbose.text) <= 0.15
    assert verbose.language == "en" and 10.5 < verbose.duration < 11.5
    assert verbose.segments and verbose.segments[0].start < 1.0 and verbose.segments[-1].end <= verbose.duration
    assert verbose.words is not None and len(verbose.words) >= 20
    assert all(0 <= w.start <= w.end <= verbose.duration + 0.5 for w in verbose.words)
    assert [w.start for w in verbose.words] == sorted(w.start for w in verbose.words)
    for fmt in ("text", "srt", "vtt"):
        with JFK.open("rb") as f:
            out = await oa.audio.transcriptions.create(model="whisper-1", file=f, response_format=fmt)
        body = out if isinstance(out, str) else str(out)
        assert wer(JFK_TEXT, re.sub(r"^(WEBVTT|\d+|[\d:,.]+ --> [\d:,.]+)$", "", body, flags=re.M)) <= 0.15, body
        if fmt == "srt":
            assert body.startswith("1\n00:00:0") and " --> " in body
        if fmt == "vtt":
            assert body.startswith("WEBVTT\n\n00:00:0")


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_any_rate_and_channels_and_the_parts_come_back_in_order(gateway: Gateway, tmp_path: Path) -> None:
    texts = list(SENTENCES[:6])
    speech = conversation(texts, pause_s=[0.8, 2.5, 0.8, 2.5, 0.8])
    stereo = np.stack([speech.audio, speech.audio * 0.5], axis=1)
    path = tmp_path / "talk.ogg"
    import soxr

    sf.write(path, soxr.resample(stereo, 16000, 44100), 44100, format="OGG", subtype="VORBIS")
    async with client(gateway) as oa:
        with path.open("rb") as f:
            out = await oa.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    assert wer(speech.text, out.text) <= 0.25, out.text
    starts = [s.start for s in out.segments or []]
    assert starts == sorted(starts) and len(starts) >= 2
    status = await asyncio.to_thread(lambda: __import__("httpx").get(gateway.http + "/status").json())
    assert status["files"] == [] and status["queues"]["batch"] == 0


@pytest.mark.parametrize("gateway", [{**REAL, "MAX_FILE_MB": 2}], indirect=True)
async def test_bad_uploads_get_clear_errors(gateway: Gateway, tmp_path: Path) -> None:
    async with client(gateway) as oa:
        await bad_uploads(oa)


async def bad_uploads(oa: openai.AsyncOpenAI) -> None:
    cases: list[tuple[Any, dict[str, Any], type[Exception], str]] = [
        (("empty.wav", b""), {}, openai.BadRequestError, "empty"),
        (("notes.txt", b"this is not audio at all " * 40), {}, openai.BadRequestError, "could not be read as audio"),
        (("big.wav", b"\0" * (3 << 20)), {}, openai.APIStatusError, "larger than 2 MB"),
        (("jfk.flac", JFK.read_bytes()), {"response_format": "docx"}, openai.BadRequestError, "response_format"),
        (("jfk.flac", JFK.read_bytes()), {"language": "klingon"}, openai.BadRequestError, "language"),
        (("jfk.flac", JFK.read_bytes()), {"temperature": 7}, openai.BadRequestError, "temperature"),
    ]
    for file, extra, error, words in cases:
        with pytest.raises(error) as info:
            await oa.audio.transcriptions.create(model="whisper-1", file=file, **extra)
        assert words in str(info.value), (extra, info.value)
        if words.startswith("larger"):
            assert info.value.status_code == 413  # type: ignore[attr-defined]
    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000, np.float32), 16000, format="WAV")
    silent = await oa.audio.transcriptions.create(model="whisper-1", file=("silence.wav", buf.getvalue()))
    assert silent.text == ""


async def file_in_flight(gateway: Gateway, http: Any, speech: Speech, tmp_path: Path) -> tuple[Any, Any]:
    """`speech` POSTed as a WAV (the request a task), once every part of it is queued; and its
    FileTranscription."""
    path = tmp_path / "talk.wav"
    sf.write(path, speech.audio, 16000, subtype="PCM_16")
    post = asyncio.create_task(http.post(gateway.http + "/v1/audio/transcriptions", files={"file": path.read_bytes()}))
    await async_wait_for(lambda: gateway.state.router.files, 30, "the file in progress")
    [job] = list(gateway.state.router.files.values())
    await async_wait_for(lambda: job.cut.is_set() or job.waiting >= PARTS_AHEAD, 30, "the file cut and queued")
    return post, job


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_a_client_that_leaves_cancels_its_file(gateway: Gateway, tmp_path: Path) -> None:
    import httpx

    redis = gateway.state.redis
    async with httpx.AsyncClient(timeout=120) as http:
        speech = conversation(list(SENTENCES) * 3, pause_s=2.0)  # many parts
        post, job = await file_in_flight(gateway, http, speech, tmp_path)
        post.cancel()
        with pytest.raises(asyncio.CancelledError):
            await post
    await async_wait_for(lambda: not gateway.state.router.files, 10, "the file given up")
    assert len(job.results) < len(job.parts)

    async def nothing_left() -> bool:
        left = await redis.xlen(keys.STREAM_BATCH)
        audio = [await redis.exists(keys.audio_key(job.id, n)) for n in range(len(job.parts))]
        return left == 0 and not any(audio)

    await async_wait_for(nothing_left, 30, "its parts and audio deleted")


async def stt_transcribe(gateway: Gateway, *args: str) -> tuple[int, str, str]:
    """`stt transcribe --url <gateway> ARGS` as a subprocess: its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stt",
        "transcribe",
        "--url",
        gateway.http,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_stt_transcribe_prints_text_writes_subtitles_and_reports_bad_files(
    gateway: Gateway, tmp_path: Path
) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio " * 50)

    async def stt(*args: str) -> tuple[int, str, str]:
        return await stt_transcribe(gateway, *args)

    code, out, err = await stt(str(JFK))
    assert code == 0, err
    assert wer(JFK_TEXT, out) <= 0.15, out
    assert "jfk.flac: uploading" in err and "done in" in err
    code, out, err = await stt("--format", "srt", "--output-dir", str(tmp_path / "subs"), str(JFK), str(bad))
    assert code == 1
    srt = (tmp_path / "subs" / "jfk.srt").read_text()
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    assert "notes.txt: HTTP 400: the file could not be read as audio" in err


@pytest.mark.parametrize("gateway", [{"decoder": False, "SHUTDOWN_TIMEOUT_S": 4.0}], indirect=True)
async def test_a_stopping_gateway_answers_a_file_it_cannot_finish_with_503(
    gateway: Gateway, aredis: Any, tmp_path: Path
) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=60) as http:
        post, job = await file_in_flight(gateway, http, conversation(list(SENTENCES[:4]), pause_s=2.0), tmp_path)
        # Nobody decodes (a silent decoder): the file cannot finish before the shutdown bound.
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        gateway.server.should_exit = True
        response = await post
        answered_after = loop.time() - stopped_at
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "shutting_down"
    assert "shutting down; send the file again" in response.json()["error"]["message"]
    assert response.headers["retry-after"] == "5"
    assert answered_after < gateway.settings.SHUTDOWN_TIMEOUT_S, "answered before uvicorn would cut it off"
    assert await aredis.xlen(keys.STREAM_BATCH) == 0, "its parts are taken off the queue"
    assert not any([await aredis.exists(keys.audio_key(job.id, n)) for n in range(len(job.parts))])


@pytest.mark.parametrize("gateway", [{"FILE_PART_S": 5.0}], indirect=True)
async def test_a_files_parts_spread_over_every_decoder(gateway: Gateway, tmp_path: Path) -> None:
    import httpx

    from decoder.engine import Engine
    from tests.jobs import running_worker

    settings = gateway.settings.replace(DECODER_ID="dec-2")
    second = Engine(settings)  # a decoder of its own: lanes are not shared between decoders
    second.load()
    async with running_worker(settings, second):
        await async_wait_for(lambda: len(gateway.state.decoders) == 2, 10, "both decoders' heartbeats")
        async with httpx.AsyncClient(timeout=120) as http:
            post, job = await file_in_flight(gateway, http, conversation(list(SENTENCES) * 2, pause_s=1.5), tmp_path)
            response = await post
    assert response.status_code == 200, response.text
    assert len(job.parts) >= 8
    by = [job.results[n].decoder for n in range(len(job.parts))]
    assert set(by) == {"dec-local", "dec-2"}, by


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_a_long_recording_comes_back_whole_in_cues_that_follow_the_speech(
    gateway: Gateway, real_engine: Any, tmp_path: Path
) -> None:
    """Nine recorded speakers one after another (77 s): every word back, and subtitle cues that
    start and end near the pauses, none longer than a reader can take in."""
    speech = joined([utterance(u) for u in sorted(refs_ids())], [1.2, 0.8, 1.5])
    path = tmp_path / "speakers.flac"
    sf.write(path, speech.audio, 16000, format="FLAC")
    async with client(gateway) as oa:
        with path.open("rb") as f:
            out = await oa.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    direct = wer(speech.text, direct_text(real_engine, speech))
    assert wer(speech.text, out.text) <= direct + 0.05, out.text
    cues = out.segments or []
    assert len(cues) >= len(speech.spans)
    for cue in cues:
        assert cue.end - cue.start <= 7.5 or len(cue.text.split()) <= 2, cue
    # No cue runs across a pause between two speakers.
    for (_, end), (start, _) in itertools.pairwise(speech.spans):
        assert not any(c.start < end - 0.5 and c.end > start + 0.5 for c in cues), (end, start)
    starts = [c.start for c in cues]
    assert starts == sorted(starts)


def refs_ids() -> list[str]:
    from tests.realspeech import refs

    return [name.removeprefix("librispeech_").removesuffix(".flac") for name in refs()]


def rss_mb(pid: int) -> float:
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def upload_watching_rss(cluster: Any, path: Path) -> tuple[Any, float]:
    """POST `path` to the cluster's gateway; the response, and the gateway's peak RSS meanwhile."""
    import httpx

    peak = [rss_mb(cluster.gateway.pid)]

    async def watch() -> None:
        while True:
            peak.append(rss_mb(cluster.gateway.pid))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        async with httpx.AsyncClient(timeout=600) as http:
            with path.open("rb") as f:
                response = await http.post(cluster.http + "/v1/audio/transcriptions", files={"file": (path.name, f)})
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return response, max(peak)


@pytest.fixture(scope="module")
def six_hours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six hours of silence as Ogg Vorbis (20 MB): what a hostile user uploads."""
    path = tmp_path_factory.mktemp("hostile") / "six-hours.ogg"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-C", "0", str(path), "trim", "0", "6:00:00"], check=True)
    return path


RSS_BOUND_MB = 200  # a gateway decoding any upload stays under this (measured: about 100 MB, as idle)


@pytest.mark.slow
@pytest.mark.parametrize("cluster", [{"MAX_FILE_S": 0.0}], indirect=True)
async def test_six_hours_of_audio_keep_the_gateway_small(cluster: Any, six_hours: Path) -> None:
    response, peak = await upload_watching_rss(cluster, six_hours)
    assert response.status_code == 200, response.text
    assert response.json()["text"] == ""
    assert peak < RSS_BOUND_MB, peak


@pytest.mark.slow
async def test_an_upload_past_max_file_s_is_refused_as_soon_as_it_is_passed(cluster: Any, six_hours: Path) -> None:
    response, peak = await upload_watching_rss(cluster, six_hours)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "too_long" and "MAX_FILE_S" in error["message"] and error["param"] == "file"
    assert peak < RSS_BOUND_MB, peak


@pytest.mark.slow
async def test_a_200_mb_upload_beside_a_live_session(cluster: Any, tmp_path: Path) -> None:
    """A 198 MB WAV (18 minutes of 48 kHz stereo, a sentence every few minutes) is decoded in
    bounded memory while a live session beside it gets every final."""
    speech = conversation(list(SENTENCES[:3]), pause_s=1.2)
    path = tmp_path / "big.wav"
    rate, minutes = 48000, 18
    with sf.SoundFile(path, "w", rate, 2, subtype="PCM_16") as out:
        block = np.zeros((rate * 60, 2), np.float32)
        talk = np.frombuffer(speech.pcm16_at(rate), "<i2").astype(np.float32) / 32768
        for minute in range(minutes):
            block[:] = np.random.default_rng(minute).normal(0, 0.002, block.shape)
            if minute % 5 == 0:
                block[: len(talk), 0] += talk
            out.write(block)
    assert 190 << 20 < path.stat().st_size < 200 << 20
    alone = await live_latencies(cluster.url, speech)
    uploading = asyncio.create_task(upload_watching_rss(cluster, path))
    beside = await live_latencies(cluster.url, speech)
    response, peak = await uploading
    assert response.status_code == 200, response.text
    assert peak < RSS_BOUND_MB, peak
    # The upload's decoding (in a thread of the same gateway) does not starve the live session:
    # each of its finals comes about as soon after its sentence as with no upload at all.
    assert len(beside) == len(alone) == 3
    assert max(beside) <= max(alone) + 1.0, (alone, beside)


async def live_latencies(url: str, speech: Speech) -> list[float]:
    """A real-time session over `speech`: per final, seconds from its sentence's end to it."""
    from client.stream import connect

    latencies = []
    loop = asyncio.get_running_loop()
    async with connect(url, sample_rate=16000, lang="en", interim=False) as stream:
        t0 = loop.time()
        async for msg in stream.receive_while(stream.send_audio(speech.pcm16, speed=1.0)):
            if msg["type"] == "final":
                end = min(speech.spans, key=lambda span: abs(span[1] - msg["end"]))[1]
                latencies.append(loop.time() - t0 - end)
    return latencies
