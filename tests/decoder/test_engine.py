"""Engine loading: progress while a model loads, clear errors for models that cannot, lanes and
their priorities."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import faster_whisper
import numpy as np
import pytest

from common.errors import ModelLoadError
from common.messages import Job, JobKind
from decoder import engine as engine_module
from decoder.engine import Engine
from decoder.output import DecodeOutput
from stt.speech import SENTENCES, conversation
from tests.conftest import make_settings


def job(kind: JobKind = JobKind.FINAL, audio: np.ndarray | None = None, **fields: Any) -> Job:
    """A job of one session's utterance over `audio` (its end in bytes of PCM16); `fields` are
    what a test is about."""
    values: dict[str, Any] = dict(id="j", session="s", gateway="g", utt=1, audio_key="k")
    values.update(fields, kind=kind, audio_end=0 if audio is None else len(audio) * 2)
    return Job(**values)


class SlowModel:
    """Stands in for WhisperModel: a load that takes a while."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        time.sleep(0.5)
        self.model = object()
        self.hf_tokenizer = type("T", (), {"token_to_id": staticmethod(lambda token: 50258)})()

    def transcribe(self, audio: Any, **kwargs: Any) -> tuple[list[Any], None]:
        return [], None  # the warm-up decode


def test_slow_load_reports_progress(
    micro_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(faster_whisper, "WhisperModel", SlowModel)
    monkeypatch.setattr(engine_module, "PROGRESS_EVERY_S", 0.1)
    with caplog.at_level(logging.INFO, logger="decoder.engine"):
        Engine(make_settings(micro_model, "redis://127.0.0.1:1/0")).load()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("still loading model %s" % micro_model) for m in messages), messages
    assert any(m.startswith("model %s loaded and warmed up in" % micro_model) for m in messages)


def test_a_directory_that_holds_no_model_cannot_load(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    engine = Engine(make_settings(empty, "redis://127.0.0.1:1/0"))
    with pytest.raises(ModelLoadError, match="cannot load model"):
        engine.load()


def test_the_forced_context_is_taken_off_the_text_and_its_words() -> None:
    from types import SimpleNamespace

    from decoder.engine import forced_prefix
    from decoder.text import drop_context_words, strip_context

    assert strip_context("The juice of lemons. See you tomorrow.", "The juice of lemons") == "See you tomorrow."
    assert strip_context("The juice of lemons makes", "The juice of lemons") == "makes"
    words = [SimpleNamespace(word=w) for w in (" The", " juice,", " of", " lemons.", " See", " you")]
    assert [w.word for w in drop_context_words(words, "The juice, of lemons.")] == [" See", " you"]
    final = job(context_text=" Before. ", prefix="the stable")
    assert forced_prefix(final, with_context=True) == "Before. the stable"
    assert forced_prefix(final, with_context=False) == "the stable"


def test_cut_loop_keeps_one_turn_of_a_loop_and_leaves_speech_alone() -> None:
    from decoder.text import cut_loop

    assert cut_loop("Good morning. Good morning. Good morning. Good morning. Good") == "Good morning."
    looped = "Ask what you can do for your country. " * 7 + "Ask"
    assert cut_loop("And so. " + looped) == "And so. Ask what you can do for your country."
    assert cut_loop("no no no") == "no no no"  # a word said thrice is speech
    assert cut_loop("the the the the the the the") == "the"
    speech = "ask not what your country can do for you, ask what you can do for your country"
    assert cut_loop(speech) == speech
    assert cut_loop("Bye. Bye.") == "Bye. Bye."
    assert cut_loop("") == ""


def thread_nices() -> dict[int, int]:
    """This process's threads and their nice values (field 19 of /proc/self/task/TID/stat)."""
    nices = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        nices[int(task.name)] = int(fields[16])
    return nices


def decode_on_both_lanes(engine: Engine) -> None:
    audio = conversation([SENTENCES[0]], lead_s=0.3, tail_s=0.5).audio
    for kind in (JobKind.FINAL, JobKind.INTERIM, JobKind.BATCH):
        [out] = engine.decode_many([(job(kind, audio, id=kind), audio.astype(np.float32))])
        assert isinstance(out, DecodeOutput), out


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread priorities from /proc")
def test_on_a_cpu_the_background_lane_decodes_at_a_lower_priority(micro_model: Path) -> None:
    before = thread_nices()
    engine = Engine(make_settings(micro_model, "redis://127.0.0.1:1/0", BACKGROUND_NICE=19, CPU_THREADS=2))
    engine.load()
    decode_on_both_lanes(engine)
    final, background = engine.lane(JobKind.FINAL), engine.lane(JobKind.INTERIM)
    assert engine.lane(JobKind.BATCH) is background, "file parts take turns with interims"
    assert final.batcher._model is not background.batcher._model, "the background lane has a model of its own"
    new = {tid: nice for tid, nice in thread_nices().items() if tid not in before}
    assert 19 in new.values(), "CTranslate2's background threads run at nice 19: %s" % new
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert base in new.values(), "the final lane's threads keep the process's priority: %s" % new
    assert set(thread_nices().values()) <= {base, 19}


def test_background_nice_0_shares_one_model_at_one_priority(micro_model: Path) -> None:
    before = thread_nices()
    engine = Engine(make_settings(micro_model, "redis://127.0.0.1:1/0", BACKGROUND_NICE=0))
    engine.load()
    decode_on_both_lanes(engine)
    assert engine.lane(JobKind.FINAL).batcher._model is engine.lane(JobKind.INTERIM).batcher._model
    new = {tid: nice for tid, nice in thread_nices().items() if tid not in before}
    assert new and set(new.values()) == {os.getpriority(os.PRIO_PROCESS, 0)}, new


def test_hallucination_guards_drop_what_music_decodes_to_and_keep_speech() -> None:
    from types import SimpleNamespace

    from decoder.text import drop_runaway_segments, echoes, first_words

    settings = make_settings("tiny.en", "redis://127.0.0.1:1/0")

    def seg(text: str, nsp: float, lp: float) -> Any:
        return SimpleNamespace(text=text, no_speech_prob=nsp, avg_logprob=lp, compression_ratio=1.0, temperature=0.0)

    # What the probe measured: music said "Thank you." (no speech 0.80, log-prob -0.94); the
    # least sure real short sentence was "Yes, of course." at 0.72 and -0.87.
    assert drop_runaway_segments([seg(" Thank you.", 0.80, -0.94)], settings)[0] == ""
    assert drop_runaway_segments([seg(" .", 0.9, -0.4)], settings)[0] == ""
    assert drop_runaway_segments([seg(" Yes, of course.", 0.72, -0.87)], settings)[0] == "Yes, of course."
    assert drop_runaway_segments([seg(" Sure.", 0.9, -0.2)], settings)[0] == "Sure."  # confident: kept
    # Music on another machine's kernels: "Thank you." at 0.68, one of Whisper's known captions.
    assert drop_runaway_segments([seg(" Thank you.", 0.68, -0.83)], settings)[0] == ""
    assert drop_runaway_segments([seg(" Thank you!", 0.68, -0.3)], settings)[0] == "Thank you!"  # said
    assert drop_runaway_segments([seg(" Thank you.", 0.4, -0.83)], settings)[0] == "Thank you."
    # Re-hearing the context is not new speech; new words are.
    assert echoes("I look no more.", "How fearful it is to cast one's eyes so low. I look no more.")
    assert echoes("Easy going.", "Is it going?")
    assert not echoes("Glue the sheet to the dark blue background.", "The birch canoe slid on the planks.")
    assert not echoes("", "Anything.")
    # Word times of the text's words: a hyphenated word is timed in pieces.
    words = [SimpleNamespace(word=w) for w in (" The", " round", "-fox", " jumps", " over")]
    assert [w.word for w in first_words(words, 3)] == [" The", " round", "-fox", " jumps"]


def test_in_a_batch_each_job_is_told_done_as_it_finishes_not_when_the_slowest_does(
    micro_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One job of a batch that falls back through every temperature (seconds on a hard input)
    must not hold its batch-mates' finals: the worker delivers each result from `on_each`."""
    engine = Engine(make_settings(micro_model, "redis://127.0.0.1:1/0", DECODE_BATCH=2))
    engine.load()
    audio = conversation([SENTENCES[0]], lead_s=0.3, tail_s=0.5).audio.astype(np.float32)
    jobs = [(job(JobKind.FINAL, audio, id=name), audio) for name in ("slow", "fast")]
    original = engine._decode_caught

    def decode(job: Job, *args: Any) -> Any:
        out = original(job, *args)
        if job.id == "slow":
            time.sleep(1.0)
        return out

    monkeypatch.setattr(engine, "_decode_caught", decode)
    told: list[tuple[int, float]] = []
    started = time.monotonic()
    outputs = engine.decode_many(jobs, on_each=lambda i, out: told.append((i, time.monotonic() - started)))
    assert all(isinstance(o, DecodeOutput) for o in outputs)
    assert [i for i, _ in told] == [1, 0], "the fast job first"
    assert told[1][1] - told[0][1] >= 0.9, told  # the fast one was told a second before the slow one


def test_a_text_stops_short_when_its_audio_holds_far_more_than_it_says() -> None:
    from decoder.text import stops_short

    assert stops_short("Chapter 34.", 5.9)  # "... Unc Billy and old Missus Possum" went unsaid
    assert not stops_short("Chapter 34, Uncle Billy and Old Mrs. Possum.", 5.9)
    assert not stops_short("Yes.", 1.8) and not stops_short("Easy going.", 2.6)
    assert stops_short("", 3.0)


def test_a_final_that_stops_short_is_decoded_again_alone_with_timestamps() -> None:
    """Its most words win; no speech, or a text that fits its audio, is not decoded again."""
    engine = Engine(make_settings("tiny.en", "redis://127.0.0.1:1/0"))
    calls: list[tuple[str, bool]] = []
    said = {False: "Chapter 34.", True: "Chapter 34, Uncle Billy and Old Mrs. Possum."}

    def decode(job: Job, audio: np.ndarray, context: Any, timestamps: bool = False) -> DecodeOutput:
        calls.append((job.prompt, timestamps))
        text = said[timestamps]
        return DecodeOutput(text, "en", None, not text, len(audio) / 16000, 10.0)

    engine._decode = decode  # type: ignore[method-assign]
    final = job(prompt="Go meet her.")
    out = engine._decode_final(final, np.zeros(int(5.9 * 16000), np.float32), None)
    assert out.text == said[True] and calls == [("Go meet her.", False), ("", True)] and out.decode_ms == 20.0
    said[True] = "Chapter."  # fewer words with timestamps: the first decode stands
    assert engine._decode_final(final, np.zeros(int(5.9 * 16000), np.float32), None).text == "Chapter 34."
    calls.clear()
    said[False] = ""  # no speech: an answer
    assert engine._decode_final(final, np.zeros(int(5.9 * 16000), np.float32), None).no_speech and len(calls) == 1
    calls.clear()
    said[False] = "Chapter 34."
    assert engine._decode_final(final, np.zeros(int(1.5 * 16000), np.float32), None).text == "Chapter 34."
    assert len(calls) == 1  # 1.5 s holds two words
    calls.clear()
    part = dataclasses.replace(final, kind=JobKind.BATCH)  # decoded with timestamps already
    assert engine._decode_final(part, np.zeros(int(5.9 * 16000), np.float32), None).text == "Chapter 34."
    assert len(calls) == 1


@pytest.mark.slow
def test_a_final_after_a_full_stop_says_all_its_audio_holds(real_engine: Engine) -> None:
    """After a prompt that ends a sentence, tiny.en ends "Chapter thirty four. Unc Billy and old
    Missus Possum" at "Chapter 34." (measured; in a stream the next final's context then lacked
    its text, and that final said the rest of it in place of its own words). The final says all."""
    from decoder.text import word_count
    from stt.speech import recording
    from stt.wer import wer
    from tests.conftest import ROOT

    speech = recording(str(ROOT / "benchmarks/data/real/librispeech_1363-135842-0000.flac"), "", tail_s=0.6)
    audio = np.concatenate([np.zeros(4800, np.float32), speech.audio])
    prompt = "She can scoop these things into three red bags, and we will go meet her Wednesday at the train station."
    final = job(JobKind.FINAL, audio, prompt=prompt)
    alone = real_engine._decode(final, audio, None)
    assert word_count(alone.text) <= 3, "the model no longer stops short: pick another"
    out = real_engine.decode_one(final, audio, None)
    assert wer("chapter thirty four unc billy and old missus possum", out.text) <= 0.3, out.text
