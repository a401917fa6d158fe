from __future__ import annotations

import msgpack
import pytest

from common.errors import SchemaError
from common.messages import (
    Job,
    JobKind,
    Result,
    decode_job,
    decode_result,
    encode_job,
    encode_result,
)


def job(**kw: object) -> Job:
    values: dict[str, object] = dict(
        id="s:0:f", kind=JobKind.FINAL, session="s", gateway="g", utt=0, audio_key="stt:audio:s:0", audio_end=3200
    )
    values.update(kw)
    return Job(**values)  # type: ignore[arg-type]


def test_job_round_trip() -> None:
    j = job(prefix="hello", lang=None, word_timestamps=True, t0=1.5)
    assert decode_job(encode_job(j)) == j


def test_result_round_trip() -> None:
    r = Result(
        id="x",
        kind=JobKind.FINAL,
        session="s",
        utt=3,
        text="hi",
        words=[{"word": "hi", "start": 0.0, "end": 0.2, "prob": 0.9}],
    )
    assert decode_result(encode_result(r)) == r


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"\xc1", "msgpack"),
        (msgpack.packb([1]), "map"),
        (msgpack.packb({"id": "x"}), "version None"),
        (msgpack.packb({"v": 2, "id": "x"}), "version 2"),
        (msgpack.packb({"v": 1, "id": "x"}), "lacks"),
        (
            msgpack.packb(
                {
                    **{
                        "v": 1,
                        "id": "x",
                        "kind": "final",
                        "session": "s",
                        "gateway": "g",
                        "utt": "0",
                        "audio_key": "k",
                        "audio_end": 1,
                    }
                }
            ),
            "utt",
        ),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "id": "x",
                    "kind": "other",
                    "session": "s",
                    "gateway": "g",
                    "utt": 0,
                    "audio_key": "k",
                    "audio_end": 1,
                }
            ),
            "kind",
        ),
    ],
)
def test_bad_jobs_are_schema_errors(payload: bytes, needle: str) -> None:
    with pytest.raises(SchemaError, match=needle):
        decode_job(payload)


def test_unknown_fields_are_ignored() -> None:
    data = msgpack.packb({**msgpack.unpackb(encode_job(job())), "future": 1})
    assert decode_job(data) == job()
