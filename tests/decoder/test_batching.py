"""Cross-session batching: N jobs decoded together give each its own alone-decode text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.errors import DecodeError
from common.messages import Job, JobKind
from decoder.engine import Engine
from decoder.output import DecodeOutput
from stt.speech import SENTENCES, conversation
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def engine(micro_model: Path) -> Engine:
    e = Engine(make_settings(micro_model, "redis://127.0.0.1:1/0", DECODE_BATCH=8))
    e.load()
    return e


@pytest.fixture(scope="module")
def audios() -> list[np.ndarray]:
    return [conversation([t], lead_s=0.3, tail_s=0.5).audio for t in SENTENCES[:6]]


def job(kind: JobKind, i: int, audio: np.ndarray, prompt: str = "", prefix: str = "") -> tuple[Job, np.ndarray]:
    return Job(
        id="%s-%d" % (kind, i),
        kind=kind,
        session="s%d" % i,
        gateway="g",
        utt=0,
        audio_key="",
        audio_end=len(audio) * 2,
        lang="en",
        prompt=prompt,
        prefix=prefix,
    ), audio


def texts(outputs: list[DecodeOutput | DecodeError]) -> list[str]:
    return [o.text if isinstance(o, DecodeOutput) else "ERROR %s" % o for o in outputs]


@pytest.mark.parametrize("kind", [JobKind.FINAL, JobKind.INTERIM])
def test_batched_jobs_get_the_text_they_get_alone(engine: Engine, audios: list[np.ndarray], kind: JobKind) -> None:
    long_prompt = " ".join(SENTENCES)  # longer than the prompt window: cut to the same length
    jobs = [
        job(kind, i, a, prompt=long_prompt if i % 2 else "", prefix="the quick" if kind == "interim" and i == 3 else "")
        for i, a in enumerate(audios)
    ]
    alone = [engine.decode_one(j, a).text for j, a in jobs]
    batcher = engine.lane(kind).batcher
    before = batcher.calls
    together = engine.decode_many(jobs)
    assert texts(together) == alone
    # Six jobs, far fewer model calls: compatible jobs shared one batched generate.
    assert batcher.calls - before < len(jobs)


def test_batch_of_one_and_batch_size_one_go_straight_through(micro_model: Path, audios: list[np.ndarray]) -> None:
    e = Engine(make_settings(micro_model, "redis://127.0.0.1:1/0", DECODE_BATCH=1))
    e.load()
    jobs = [job(JobKind.FINAL, i, a) for i, a in enumerate(audios[:2])]
    assert texts(e.decode_many(jobs)) == [e.decode_one(j, a).text for j, a in jobs]
    assert e.lane(JobKind.FINAL).batcher.calls == 0


class Poisoned:
    """The real CTranslate2 model, except that a batch holding the poison prompt token fails."""

    def __init__(self, model: Any, poison: int) -> None:
        self.model, self.poison = model, poison

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def generate(self, features: Any, prompts: list[list[int]], **kwargs: Any) -> Any:
        if any(self.poison in p for p in prompts):
            raise RuntimeError("CUDA failed with error out of memory")
        return self.model.generate(features, prompts, **kwargs)


def test_a_bad_job_in_a_batch_fails_alone(
    engine: Engine, audios: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [job(JobKind.INTERIM, i, a, prefix="zebra" if i == 2 else "") for i, a in enumerate(audios[:4])]
    alone = [engine.decode_one(j, a).text for j, a in jobs]
    poison = engine._tokens("zebra")[0]
    batcher = engine.lane(JobKind.INTERIM).batcher
    monkeypatch.setattr(batcher, "_model", Poisoned(batcher._model, poison))
    got = engine.decode_many(jobs)
    assert isinstance(got[2], DecodeError) and "out of memory" in str(got[2])
    assert [t for i, t in enumerate(texts(got)) if i != 2] == [t for i, t in enumerate(alone) if i != 2]


def test_encoder_windows_are_the_clip_and_its_pad_in_steps() -> None:
    from decoder.batching import WINDOW_FRAMES, window_frames

    assert window_frames(2.3, 0.0) == 400  # 2.3 s → the next 2 s step
    assert window_frames(2.3, 4.0) == 800
    assert window_frames(0.0, 0.0) == 200
    assert window_frames(29.0, 4.0) == WINDOW_FRAMES
    assert window_frames(2.3, 0.0, 10.0) == 1000  # a fixed length for short clips
    assert window_frames(12.3, 0.0, 10.0) == 1400


def test_a_cut_window_is_used_for_its_job_only(micro_model: Path, audios: list[np.ndarray]) -> None:
    e = Engine(make_settings(micro_model, "redis://127.0.0.1:1/0", FINAL_WINDOW_PAD_S=1.0, DECODE_BATCH=1))
    e.load()
    j, a = job(JobKind.FINAL, 0, audios[0])
    seen: list[int] = []
    real = e.lane(JobKind.FINAL).batcher._model

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def encode(self, features: Any, to_cpu: bool = False) -> Any:
            seen.append(np.asarray(features).shape[-1])
            return real.encode(features, to_cpu=to_cpu)

    e.lane(JobKind.FINAL).batcher._model = Spy()
    assert isinstance(e.decode_one(j, a), DecodeOutput)
    assert seen and seen[0] < 3000  # the encoder saw the clip + 1 s, not 30 s
    list(e.model.transcribe(a)[0])  # another transcribe in this thread: the whole window again
    assert seen[-1] == 3000


class Bfloat16:
    """A bfloat16 StorageView as CTranslate2 hands one out: accepted back by the model, but with
    no numpy form (its array interface has no type string, which numpy refuses)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    @property
    def __array_interface__(self) -> dict[str, Any]:
        return {"shape": (1,), "typestr": "", "data": (0, False), "version": 3}


class Bfloat16Model:
    """The real model, computing in "bfloat16": its encoder output cannot become numpy."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        return Bfloat16(self.model.encode(features, to_cpu=to_cpu))

    def _unwrap(self, x: Any) -> Any:
        return x.real if isinstance(x, Bfloat16) else x

    def generate(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        return self.model.generate(self._unwrap(features), *args, **kwargs)

    def align(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        return self.model.align(self._unwrap(features), *args, **kwargs)

    def detect_language(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        return self.model.detect_language(self._unwrap(features), *args, **kwargs)


def test_batched_finals_with_words_work_when_the_encoder_output_has_no_numpy_form(
    engine: Engine, audios: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises((TypeError, ValueError)):
        np.asarray(Bfloat16(None))  # as numpy does with CTranslate2's bfloat16 storage
    jobs = [job(JobKind.FINAL, i, a) for i, a in enumerate(audios[:4])]
    for j, _ in jobs:
        j.word_timestamps = True  # Deepgram's finals always want their words
    alone = [engine.decode_one(j, a) for j, a in jobs]
    batcher = engine.lane(JobKind.FINAL).batcher
    monkeypatch.setattr(batcher, "_model", Bfloat16Model(batcher._model))
    before = batcher.calls
    got = engine.decode_many(jobs)
    assert texts(got) == [o.text for o in alone]
    assert [o.words for o in got if isinstance(o, DecodeOutput)] == [o.words for o in alone]
    assert batcher.calls - before < len(jobs)  # still batched
