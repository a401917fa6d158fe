"""Who spoke, end to end on the native protocol: a recorded conversation of two speakers
through a gateway and a decoder with the speaker encoder; labels on finals and their words;
bad options; no encoder, a clear refusal."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import openai
import pytest
import websockets

from client.cli import Printer
from stt.speech import joined, recording
from tests.gateway.conftest import Gateway
from tests.gateway.protocols.test_deepgram import close_stream, listen
from tests.gateway.test_files import stt_transcribe
from tests.gateway.wsclient import check_invariants, finals, run_session

DATA = Path(__file__).parent.parent / "data" / "speakers"
TURNS = ["1688-142285-0009", "1998-15444-0007", "1688-142285-0008", "1998-15444-0001"]


def conversation() -> bytes:
    parts = [recording(str(DATA / ("librispeech_%s.flac" % name)), "", tail_s=0.0) for name in TURNS]
    return joined(parts, pauses=1.2).pcm16 + bytes(32000 * 2)


@pytest.fixture(autouse=True)
def encoder_here(micro_engine: object) -> None:
    if getattr(micro_engine, "voice", None) is None:
        pytest.skip("no speaker encoder (python -m stt.turnfile fetches it)")


async def test_each_final_and_its_words_say_who_spoke(gateway: Gateway) -> None:
    msgs = await run_session(
        gateway.url, conversation(), speed=4.0, start={"diarize": True, "max_speakers": 4, "word_timestamps": True}
    )
    check_invariants(msgs)
    got = finals(msgs)
    assert [f["speaker"] for f in got] == [0, 1, 0, 1], [(f["start"], f.get("speaker")) for f in got]
    for f in got:
        assert all(w["speaker"] == f["speaker"] for w in f["words"])


async def test_without_diarize_finals_carry_no_speaker(gateway: Gateway) -> None:
    msgs = await run_session(gateway.url, conversation()[: 32000 * 5], speed=4.0)
    assert all("speaker" not in f for f in finals(msgs))


@pytest.mark.parametrize(
    ("start", "says"),
    [({"diarize": "yes"}, "diarize must be"), ({"max_speakers": 0}, "max_speakers"), ({"max_speakers": 99}, "1-8")],
)
async def test_bad_speaker_options_are_named_and_the_connection_stays(
    gateway: Gateway, start: dict[str, object], says: str
) -> None:
    async with websockets.connect(gateway.url) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000, **start}))
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["code"] == "bad_start" and says in error["message"]
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "diarize": True}))
        assert json.loads(await ws.recv())["type"] == "started"  # corrected, it starts


@pytest.mark.parametrize("gateway", [{"decoder": False}], indirect=True)
async def test_with_no_decoder_that_has_the_encoder_diarize_is_refused_by_name(gateway: Gateway) -> None:
    async with websockets.connect(gateway.url) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "diarize": True}))
        error = json.loads(await ws.recv())
        assert error["code"] == "diarize_unavailable" and "speaker encoder" in error["message"]
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000}))
        assert json.loads(await ws.recv())["type"] == "started"


@pytest.mark.parametrize("gateway", [{"MODEL_NAME": "tiny.en"}], indirect=True)
async def test_deepgram_diarize_gives_each_word_its_speaker_through_the_sdk(gateway: Gateway) -> None:
    async with listen(gateway, encoding="linear16", sample_rate=16000, diarize=True) as s:
        await s.send_audio(conversation(), 32000)
        await close_stream(s)
    finals = [f for f in s.finals() if f["channel"]["alternatives"][0]["words"]]
    assert len(finals) == 4, s.text()
    speakers = []
    for f in finals:
        words = f["channel"]["alternatives"][0]["words"]
        assert len({w["speaker"] for w in words}) == 1
        assert all(0.0 <= w["speaker_confidence"] <= 1.0 for w in words)
        speakers.append(words[0]["speaker"])
    assert speakers == [0, 1, 0, 1]


def test_stt_client_prints_the_speaker_of_each_sentence() -> None:
    out = io.StringIO()
    show = Printer(out, as_json=False)
    show({"type": "final", "start": 0.5, "end": 2.0, "text": " Hello.", "speaker": 1})
    show({"type": "final", "start": 3.0, "end": 4.0, "text": " Hi."})
    assert out.getvalue().splitlines() == ["[   0.50 -    2.00] speaker 1: Hello.", "[   3.00 -    4.00] Hi."]


def conversation_wav(tmp_path: Path) -> Path:
    import soundfile as sf

    path = tmp_path / "talk.wav"
    sf.write(path, np.frombuffer(conversation(), dtype="<i2"), 16000, subtype="PCM_16")
    return path


@pytest.mark.parametrize("gateway", [{"MODEL_NAME": "tiny.en"}], indirect=True)
async def test_a_file_comes_back_diarized_through_the_openai_sdk(gateway: Gateway, tmp_path: Path) -> None:
    """diarized_json, VTT voice tags, known speakers named by their clips, a clip that is not
    audio refused (the client is closed at the end: an open one's socket, collected during a
    later test, fails that test)."""
    async with openai.AsyncOpenAI(base_url=gateway.http + "/v1", api_key="unused", max_retries=0, timeout=120) as oa:
        path = conversation_wav(tmp_path)
        with path.open("rb") as f:
            got = await oa.audio.transcriptions.create(
                model="gpt-4o-transcribe-diarize", file=f, response_format="diarized_json", chunking_strategy="auto"
            )
        segments = got.segments
        assert segments and all(s.type == "transcript.text.segment" for s in segments)
        turns = [0.7, 5.6, 9.6, 15.0]  # where each turn starts (1688, 1998, 1688, 1998)
        labels = [next(s.speaker for s in segments if s.start >= at - 0.5) for at in turns]
        assert labels[0] == labels[2] == "A" and labels[1] == labels[3] == "B", [(s.start, s.speaker) for s in segments]
        with path.open("rb") as f:
            vtt = await oa.audio.transcriptions.create(model="gpt-4o-transcribe-diarize", file=f, response_format="vtt")
        assert "<v A>" in str(vtt) and "<v B>" in str(vtt)
        data_url = (
            "data:audio/flac;base64,"
            + base64.b64encode((DATA / "librispeech_1688-142285-0009.flac").read_bytes()).decode()
        )
        stranger = (
            "data:audio/flac;base64,"
            + base64.b64encode((DATA / "librispeech_3331-159605-0001.flac").read_bytes()).decode()
        )
        with path.open("rb") as f:
            named = await oa.audio.transcriptions.create(
                model="gpt-4o-transcribe-diarize",
                file=f,
                response_format="diarized_json",
                known_speaker_names=["agent", "stranger"],
                known_speaker_references=[data_url, stranger],
            )
        labels = [next(s.speaker for s in named.segments if s.start >= at - 0.5) for at in turns]
        assert labels == ["agent", "B", "agent", "B"], [(s.start, s.speaker) for s in named.segments]
        with path.open("rb") as f:
            bad = oa.audio.transcriptions.create(
                model="gpt-4o-transcribe-diarize",
                file=f,
                response_format="diarized_json",
                known_speaker_names=["agent"],
                known_speaker_references=["data:audio/wav;base64,AAAA"],
            )
            with pytest.raises(openai.BadRequestError, match=r"known_speaker_references\[0\] is not an audio clip"):
                await bad


@pytest.mark.parametrize("gateway", [{"MODEL_NAME": "tiny.en"}], indirect=True)
async def test_stt_transcribe_speakers_prints_a_line_per_turn(gateway: Gateway, tmp_path: Path) -> None:
    code, out, err = await stt_transcribe(gateway, "--speakers", str(conversation_wav(tmp_path)))
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["A", "B", "A", "B"], lines
