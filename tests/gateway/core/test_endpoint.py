"""Endpointing on real speech (espeak-ng) and silence, no server: where an utterance starts (with
its pre-roll), what is too short to count, when it ends, and the forced cut."""

from __future__ import annotations

import numpy as np
import pytest

from common.audio import float32_to_pcm16
from gateway.core.endpoint import Endpointer
from gateway.core.frames import RATE, Audio, Began, Ended, Event, Paused, WentOn, end_threshold_ms
from stt.speech import SENTENCES, conversation, synth


def endpointer(**overrides: float) -> Endpointer:
    args = {
        "vad_mode": 2,
        "pre_roll_ms": 300,
        "min_speech_ms": 150,
        "silence_min_ms": 400,
        "silence_max_ms": 700,
        "max_utterance_s": 25.0,
    }
    args.update(overrides)
    return Endpointer(**args)  # type: ignore[arg-type]


def run(ep: Endpointer, pcm: bytes, chunk: int = 3200) -> list[Event]:
    events: list[Event] = []
    for i in range(0, len(pcm), chunk):
        events += ep.feed(pcm[i : i + chunk])
    return events


KIND = {Began: "start", Audio: "audio", Paused: "pause", WentOn: "speech", Ended: "end"}


def kinds(events: list[Event]) -> list[str]:
    return [KIND[type(e)] for e in events]


def ends(events: list[Event]) -> list[Ended]:
    return [e for e in events if isinstance(e, Ended)]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def test_speech_opens_an_utterance_with_its_pre_roll_and_ends_where_speech_ended() -> None:
    speech = conversation([SENTENCES[0]], lead_s=1.0, tail_s=1.5)
    ep = endpointer()
    events = run(ep, speech.pcm16)
    names = kinds(events)
    assert names[0] == "start" and names.count("start") == 1 and names.count("end") == 1
    onset, offset = speech.spans[0]
    start, [end] = events[0], ends(events)
    assert abs(start.sample / RATE - (onset - 0.3)) < 0.1  # 300 ms of pre-roll kept
    # The utterance's audio is exactly the stream's audio from its start: nothing clipped.
    audio = b"".join(e.pcm for e in events if isinstance(e, Audio))
    assert audio == speech.pcm16[start.sample * 2 : start.sample * 2 + len(audio)]
    assert abs(end.sample / RATE - offset) < 0.1 and end.reason == "silence"
    waited_ms = (end.decided - end.sample) / RATE * 1000
    assert 400 <= waited_ms <= 700 + 60


# WebRTC VAD keeps saying "voiced" for ~90 ms after a sound stops: a 30 ms click is 4 voiced
# frames, under MIN_SPEECH_MS's 5.
@pytest.mark.parametrize(("burst_ms", "opens"), [(30, False), (400, True)])
def test_a_voiced_burst_shorter_than_min_speech_is_noise(burst_ms: int, opens: bool) -> None:
    voiced = synth("Hello there everyone")
    middle = len(voiced) // 3
    burst = voiced[middle : middle + burst_ms * RATE // 1000]
    pcm = float32_to_pcm16(np.concatenate([silence(1.0), burst, silence(1.5)]))
    assert ("start" in kinds(run(endpointer(), pcm))) is opens


def test_the_end_threshold_adapts_to_length_and_to_the_last_words() -> None:
    assert end_threshold_ms(500, "", 400, 700) == 700  # a word or two: likely mid-phrase
    assert end_threshold_ms(8000, "", 400, 700) == 400  # long speech: close it promptly
    assert end_threshold_ms(4500, "", 400, 700) == pytest.approx(550)
    assert end_threshold_ms(500, "That is all.", 400, 700) == 400  # a sentence ended
    for mid in (
        "I went to the store and",
        "Please call Stella,",
        "one of the",
        "jumps over the.",
        "and so...",
        "slid on.",
        "from my.",
        "Glue the sheet too.",  # "to" as Whisper hears it at a pause
    ):
        assert end_threshold_ms(8000, mid, 400, 700) == 700  # Whisper ends a cut-off decode with "."
    for question in ("Where are you from?", "What are you looking at?", "Why is that?", "Who do I talk to？"):
        assert end_threshold_ms(8000, question, 400, 700) == 400  # a question may end on a preposition
    # No question mark; an article, a possessive, a cut-off "to": still mid-phrase.
    for mid in ("Where are you from.", "Is that your?", "And the?", "Can I come too?"):
        assert end_threshold_ms(8000, mid, 400, 700) == 700


def test_a_short_pause_inside_speech_does_not_end_the_utterance() -> None:
    speech = conversation(list(SENTENCES[:2]), pause_s=0.25, tail_s=1.5)
    names = kinds(run(endpointer(), speech.pcm16))
    assert names.count("start") == 1 and names.count("end") == 1


def test_speech_longer_than_max_utterance_is_cut_at_a_quiet_frame_and_goes_on() -> None:
    speech = conversation([" ".join(SENTENCES[:3])], lead_s=0.5, tail_s=1.5)
    assert speech.duration > 9
    ep = endpointer(max_utterance_s=3.0)
    events = run(ep, speech.pcm16)
    cuts = [e for e in ends(events) if e.reason == "max_length"]
    assert cuts
    for cut in cuts:
        nxt = events[events.index(cut) + 1]
        assert isinstance(nxt, Began) and nxt.sample == cut.sample  # the next utterance starts at the cut
        assert cut.tail_bytes == (cut.decided - cut.sample) * 2  # what followed the cut goes with it
    starts = [e.sample for e in events if isinstance(e, Began)]
    assert all(0 < b.sample - a <= 3.0 * RATE for a, b in zip(starts, ends(events)))


def test_finalize_ends_the_utterance_now_and_drops_a_candidate() -> None:
    voiced = synth("Hello there everyone")
    ep = endpointer()
    events = run(ep, float32_to_pcm16(np.concatenate([silence(0.5), voiced])))
    assert isinstance(events[0], Began)
    end = ends(ep.force_end())
    assert len(end) == 1 and end[0].reason == "finalize"
    ep2 = endpointer(min_speech_ms=1000)
    run(ep2, float32_to_pcm16(np.concatenate([silence(0.5), voiced[: RATE // 5]])))
    assert ep2.force_end() == []  # a candidate too short to count is dropped
