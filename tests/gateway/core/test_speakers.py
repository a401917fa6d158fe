"""Online speaker clustering, alone: new speakers, stable labels, the cap, relabelling, and its
recorded state."""

from __future__ import annotations

import numpy as np

from common.messages import Result
from gateway.core.effects import Record
from gateway.core.options import SessionOptions
from gateway.core.restore import restore
from gateway.core.speakers import SAME, Speakers, label_all
from gateway.core.state import Snapshot, dump_options
from stt.speech import SENTENCES, conversation
from tests.gateway.core.harness import Harness


def voices(n: int, seed: int = 0) -> np.ndarray:
    """`n` well-separated unit "voices" and a way to make utterances near each."""
    rng = np.random.default_rng(seed)
    base = np.abs(rng.normal(size=(n, 256))).astype(np.float32)
    base[:, : 256 // n * n] = 0.0
    for i in range(n):
        base[i, i * (256 // n) : (i + 1) * (256 // n)] = 3.0  # each speaker's own band
    normed: np.ndarray = base / np.linalg.norm(base, axis=1, keepdims=True)
    return normed


def utterance(voice: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    v = voice + rng.normal(scale=0.02, size=voice.shape).astype(np.float32)
    out: np.ndarray = v / np.linalg.norm(v)
    return out


def label(order: list[int], vs: np.ndarray, max_speakers: int = 8) -> list[int]:
    rng = np.random.default_rng(1)
    s = Speakers(max_speakers)
    return [s.assign(utterance(vs[k], rng))[0] for k in order]


def test_labels_count_from_0_in_order_of_first_appearance_and_stay() -> None:
    vs = voices(3)
    assert label([2, 0, 2, 1, 0, 1, 2], vs) == [0, 1, 0, 2, 1, 2, 0]


def test_relabelled_inputs_give_relabelled_outputs() -> None:
    """Clustering cares who sounds like whom, not who they are: swapping the speakers swaps
    the labels the same way."""
    vs = voices(3)
    order = [0, 1, 0, 2, 1, 2, 2, 0]
    first = label(order, vs)
    perm = [2, 0, 1]
    second = label([perm[k] for k in order], vs)
    assert first == second  # labels by first appearance: the same sequence


def test_max_speakers_merges_into_the_nearest() -> None:
    vs = voices(4)
    got = label([0, 1, 2, 3, 3], vs, max_speakers=2)
    assert got[:2] == [0, 1] and set(got) == {0, 1}


def test_a_voice_far_from_all_opens_a_new_speaker_and_confidence_says_how_close() -> None:
    s = Speakers()
    a = np.zeros(256, np.float32)
    a[0] = 1.0
    b = np.zeros(256, np.float32)
    b[1] = 1.0
    assert s.assign(a) == (0, 1.0)
    near = a + 0.3 * b
    n, sim = s.assign(near)
    assert n == 0 and SAME <= sim < 1.0
    assert s.assign(b)[0] == 1


def test_the_state_survives_a_dump_and_load() -> None:
    vs = voices(3)
    rng = np.random.default_rng(2)
    s = Speakers(max_speakers=3)
    for k in [0, 1, 2]:
        s.assign(utterance(vs[k], rng))
    again = Speakers.load(s.dump())
    assert again.max_speakers == 3 and again.counts == [1, 1, 1]
    assert [again.assign(utterance(vs[k], rng))[0] for k in [2, 1, 0]] == [2, 1, 0]


def test_a_sessions_speakers_are_recorded_and_restored_with_it() -> None:
    """Labels stay stable across a resume: the centroids are part of the recorded state, and
    each final's job asks for its voice."""

    vs = voices(2)
    h = Harness(SessionOptions(sample_rate=16000, lang="en", diarize=True, max_speakers=2), resumable=True)
    h.feed(conversation(list(SENTENCES[:2]), pause_s=1.2))
    jobs = h.jobs("final")
    assert len(jobs) == 2 and all(j.speakers for j in jobs)
    for job, v in zip(jobs, vs):
        h.give(
            Result(id=job.id, kind=job.kind, session=job.session, utt=job.utt, text="x", audio_s=2.0, voice=v.tolist())
        )
    assert [m["speaker"] for m in h.of_type("final")] == [0, 1]
    h.apply([Record(h.session.snapshot())])  # as its driver records it (each second, and on leaving)
    assert "speakers" in h.state
    h.state["options"] = dump_options(h.session.options)  # recorded when the session was made resumable
    snap = Snapshot.parse(h.session.id, dict(h.state), h.time.t)
    session, _ = restore(h.settings, "gw2", h.metrics, snap, h.sent, b"", h.time.clock())
    assert session.speakers is not None and session.speakers.counts == [1, 1]
    assert session.speakers.assign(vs[1])[0] == 1


def test_a_voice_heard_too_briefly_joins_the_nearest_speaker_rather_than_opening_one() -> None:
    vs = voices(2)
    s = Speakers()
    assert s.assign(vs[0], seconds=3.0)[0] == 0
    assert s.assign(vs[1], seconds=0.5)[0] == 0  # "Yes." from someone new: too little to tell
    assert s.assign(vs[1], seconds=2.0)[0] == 1


def test_a_whole_recording_labels_early_segments_with_what_is_heard_later() -> None:
    vs, rng = voices(2), np.random.default_rng(3)
    segments = [utterance(vs[0], rng), utterance(vs[1], rng), utterance(vs[0], rng)]
    seconds = [0.6, 4.0, 5.0]  # the first is too short to open a speaker on its own
    assert label_all([list(v) for v in segments], seconds) == [0, 1, 0]
    assert label_all([None, list(segments[1])], [1.0, 4.0]) == [None, 0]
    assert label_all([None], [1.0]) == [None]


def test_a_whole_recordings_speaker_heard_for_under_three_seconds_in_all_joins_the_nearest() -> None:
    vs, rng = voices(3), np.random.default_rng(4)
    segs = [utterance(vs[0], rng), utterance(vs[1], rng), utterance(vs[2], rng), utterance(vs[0], rng)]
    odd = [list(v) for v in segs]
    assert label_all(odd, [4.0, 5.0, 2.5, 3.0]) == [0, 1, 0 if odd[2] @ segs[0] > odd[2] @ segs[1] else 1, 0]
    assert label_all(odd, [4.0, 5.0, 3.0, 3.0]) == [0, 1, 2, 0]  # enough to be someone
