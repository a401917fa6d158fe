"""Real speech through a gateway and a decoder with the real tiny.en (in this process; the
server and the WebSockets are real): the spoken words come back (WER against the known text, no
worse than a direct decode of the same recording), in several voices and speeds, and for
recorded human speech (jfk.flac)."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from typing import Any

import numpy as np
import pytest
import websockets

from common import keys
from common.audio import float32_to_pcm16, pcm16_to_float32
from common.messages import Job, JobKind
from decoder.engine import Engine
from gateway.core.frames import FRAME_BYTES, FRAME_MS
from gateway.core.jobs import final_prompt
from stt.noise import mixed_set, nonspeech_set
from stt.speech import SENTENCES, Speech, conversation, joined, recording
from stt.wer import wer
from tests.conftest import JFK, JFK_TEXT
from tests.gateway.conftest import Gateway
from tests.gateway.wsclient import check_invariants, finals, run_session
from tests.realspeech import direct_text, utterance

REAL = {"MODEL_NAME": "tiny.en", "DECODE_BATCH": 2}


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
@pytest.mark.parametrize(("voice", "speed"), [("en-us", 160), ("en-gb", 140), ("en-us+f3", 190)])
async def test_streamed_finals_carry_the_spoken_words(
    gateway: Gateway, real_engine: Engine, voice: str, speed: int
) -> None:
    speech = conversation(list(SENTENCES[:3]), pause_s=1.2, voice=voice, speed=speed)
    msgs = await run_session(gateway.url, speech.pcm16, speed=3.0)
    check_invariants(msgs)
    got = finals(msgs)
    assert len(got) == 3, got
    streamed = wer(speech.text, " ".join(f["text"] for f in got))
    direct = wer(speech.text, direct_text(real_engine, speech))
    # Three sentences are 39 words: one word is 2.6 points, and timing moves the cut points.
    assert streamed <= direct + 0.15 and streamed <= 0.3, (streamed, direct, [f["text"] for f in got])
    for f, text, (start, end) in zip(got, speech.texts, speech.spans):
        assert wer(text, f["text"]) <= 0.6, (text, f["text"])  # this final is about this sentence
        assert abs(f["start"] - start) < 0.4 and abs(f["end"] - end) < 0.4
    assert any(m["type"] == "interim" for m in msgs)
    for m in msgs:
        if m["type"] == "interim":
            # An interim shows the words heard so far: never empty, no "..." and no period where
            # the audio was merely cut.
            assert m["text"].strip() and "..." not in m["text"] and not re.search(r"[.!?]$", m["text"]), m


def direct_by_utterance(engine: Engine, parts: list[Speech]) -> str:
    """Each recording decoded directly as a whole, alone (the accuracy benchmark's floor)."""
    return " ".join(direct_text(engine, part) for part in parts)


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
@pytest.mark.parametrize(
    "speakers",
    [
        ("6880-216547-0000", "1183-124566-0000", "7902-96591-0000"),  # man, woman, man
        ("4640-19187-0000", "2518-154825-0000", "5514-19192-0000"),  # woman, man, woman
    ],
)
async def test_recorded_speakers_in_turn_get_their_words(
    gateway: Gateway, real_engine: Engine, speakers: tuple[str, ...]
) -> None:
    """Recorded people (LibriSpeech), one after another with pauses: the streamed finals carry
    the words a direct decode of each recording gives, within a few points."""
    parts = [utterance(u, tail_s=0.0) for u in speakers]
    speech = joined(parts, [1.2, 0.9])
    msgs = await run_session(gateway.url, speech.pcm16, speed=3.0)
    check_invariants(msgs)
    got = finals(msgs)
    streamed = wer(speech.text, " ".join(f["text"] for f in got))
    direct = wer(speech.text, direct_by_utterance(real_engine, parts))
    assert streamed <= direct + 0.06, (streamed, direct, [f["text"] for f in got])
    # Every speaker's turn ends in a final of its own: no final runs across a pause.
    for (_, end), (start, _) in itertools.pairwise(speech.spans):
        assert not any(f["start"] < end - 0.3 and f["end"] > start + 0.3 for f in got), (end, start, got)


@pytest.mark.parametrize("gateway", [{**REAL, "SPECULATE_MS": 0}, REAL], indirect=True, ids=["direct", "speculative"])
async def test_each_final_is_a_direct_decode_of_its_audio_after_its_context(
    gateway: Gateway, real_engine: Engine, sredis: Any
) -> None:
    """In real time each final arrives before the next utterance ends, so the next final is
    decoded after it: the previous utterance's audio with its text forced, the finals before as
    prompt. The same decode in this process gives the same text, and every utterance's audio is
    exactly the session's audio from its start. With speculation (the default) the final is the
    speculative decode of the speech and the pause's silence after it (SPECULATE_MS, or
    EOT_SPECULATE_MS in a session without interims): the same words as that decode done
    directly."""
    # A session without interims, as this one, speculates at EOT_SPECULATE_MS when that is sooner.
    speculate_ms = gateway.settings.SPECULATE_MS and min(
        gateway.settings.SPECULATE_MS, gateway.settings.EOT_SPECULATE_MS
    )
    speech = conversation(list(SENTENCES[:2]), pause_s=1.2)
    audio_by_utt: dict[int, bytes] = {}
    got: list[dict[str, Any]] = []
    async with websockets.connect(gateway.url, max_size=2**23) as ws:
        await ws.send(json.dumps({"op": "start", "sample_rate": 16000, "lang": "en", "interim": False}))
        session = json.loads(await ws.recv())["session_id"]
        pcm = speech.pcm16
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(0, len(pcm), 3200):
            await asyncio.sleep(max(0.0, t0 + i / 32000 - loop.time()))
            await ws.send(pcm[i : i + 3200])
            while True:  # take finals as they come: an utterance's audio is kept until the next final
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 0.001))
                except TimeoutError:
                    break
                got.append(msg)
                audio_by_utt[msg["utterance"]] = sredis.get(keys.audio_key(session, msg["utterance"]))
        while len(got) < 2:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
            got.append(msg)
            audio_by_utt[msg["utterance"]] = sredis.get(keys.audio_key(session, msg["utterance"]))
        await ws.send(json.dumps({"op": "stop"}))
        async for raw in ws:
            if json.loads(raw)["type"] == "done":
                break
    assert [f["type"] for f in got] == ["final"] * 2
    session_audio = pcm16_to_float32(speech.pcm16)
    recent, context, context_text = "", None, ""
    for f in got:
        data = audio_by_utt[f["utterance"]]
        assert data
        audio = pcm16_to_float32(data)
        offset = round(f["start"] * 16000)
        assert np.allclose(audio, session_audio[offset : offset + len(audio)], atol=1e-4)
        before = recent[: len(recent) - len(context_text)].rstrip()
        if speculate_ms:
            # Up to the frame where the silence after the speech reached SPECULATE_MS.
            frames = -(-speculate_ms // FRAME_MS)
            data = data[: round((f["end"] - f["start"]) * 16000) * 2 + frames * FRAME_BYTES]
            audio = pcm16_to_float32(data)
        job = Job(
            id="x",
            kind=JobKind.FINAL,
            session=session,
            gateway="g",
            utt=f["utterance"],
            audio_key="",
            audio_end=len(data),
            lang="en",
            prompt=final_prompt("", before),
            context_text=context_text,
        )
        assert f["text"] == real_engine.decode_one(job, audio, context).text
        recent = (recent + " " + f["text"]).strip()
        context, context_text = audio, f["text"]
    # 24 words; tiny.en hears the first sentence as "The quick round-fuck stumps over the lazy
    # dog" in some encoder windows (8-16 s, not 14, 20 or 30): 7 errors at worst.
    assert wer(speech.text, recent) <= 0.3, recent


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_recorded_speech_with_word_timestamps_and_no_hallucinated_tail(gateway: Gateway) -> None:
    """jfk.flac sent faster than real time, with word timestamps: word for word, and nothing
    added in the trailing silence (a second decode of it used to say "Thank you.")."""
    speech = recording(str(JFK), JFK_TEXT)
    msgs = await run_session(gateway.url, speech.pcm16, speed=4.0, start={"word_timestamps": True})
    check_invariants(msgs)
    got = finals(msgs)
    text = " ".join(f["text"] for f in got)
    assert wer(JFK_TEXT, text) <= 0.05, text
    assert "thank" not in text.lower()
    for f in got:
        words = f["words"]
        assert "".join(w["word"] for w in words).strip() == f["text"]
        starts = [w["start"] for w in words]
        assert starts == sorted(starts)
        assert f["start"] - 0.05 <= starts[0] and words[-1]["end"] <= f["end"] + 0.8, (f["start"], f["end"], words)


def last_stable_prefixes(msgs: list[dict[str, Any]]) -> dict[int, str]:
    out: dict[int, str] = {}
    for m in msgs:
        if m["type"] == "interim" and m["stable_chars"]:
            out[m["utterance"]] = m["text"][: m["stable_chars"]]
    return out


@pytest.mark.parametrize("gateway", [{**REAL, "FINAL_KEEPS_STABLE": True}], indirect=True)
async def test_a_final_can_be_made_to_keep_its_committed_prefix(gateway: Gateway) -> None:
    """FINAL_KEEPS_STABLE: each final starts with the stable prefix its interims announced."""
    speech = conversation(list(SENTENCES[1:4]), pause_s=1.2)
    msgs = await run_session(gateway.url, speech.pcm16, speed=3.0)
    check_invariants(msgs)
    stable = last_stable_prefixes(msgs)
    assert stable, "no interim announced a stable prefix"
    for f in finals(msgs):
        assert f["text"].startswith(stable.get(f["utterance"], "")), (stable, f)


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_no_words_from_sounds_that_are_not_speech(gateway: Gateway, real_engine: Engine) -> None:
    """Music and tones that tiny.en turns into "Thank you." or "Woohoo!" give no final text, and
    speech between two noise bursts gives its own words once (not the context said again)."""
    sounds = {s.name: s for s in nonspeech_set()}
    for name in ("tone-2", "music-0", "music-2", "music-4", "breath-1", "cough-0"):
        msgs = await run_session(gateway.url, float32_to_pcm16(sounds[name].audio), speed=4.0)
        check_invariants(msgs)
        texts = [f["text"] for f in finals(msgs) if f["text"]]
        assert texts == [], (name, texts)
        assert all(f.get("no_speech") for f in finals(msgs)), name
    talk = utterance("6880-216547-0000", tail_s=0.0)
    [mixed] = mixed_set([talk])
    msgs = await run_session(gateway.url, float32_to_pcm16(mixed.audio), speed=4.0)
    said = [f["text"] for f in finals(msgs) if f["text"]]
    assert len(said) == 1, said
    assert wer(talk.text, said[0]) <= wer(talk.text, direct_text(real_engine, talk)) + 0.05, said
