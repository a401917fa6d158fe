"""Who spoke: a session's speakers, found online from its utterances' speaker embeddings (the
decoders compute them: decoder/voice.py).

Each utterance's embedding is compared (cosine) with each known speaker's centroid (the
normalized sum of the embeddings given to it): the closest at SAME or above gets it; when none
is, a new speaker is opened, up to `max_speakers`, beyond which the closest gets it anyway.
Labels are integers from 0 in order of first appearance, and never change: the sums are part of
the session's resumable state. SAME comes from the measurement in docs/benchmarks/speakers.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SAME = 0.72  # cosine to a centroid at or above which an utterance is that speaker's
MAX_SPEAKERS = 8
MIN_NEW_S = 1.0  # a voice heard for less than this joins the nearest speaker: too little to be sure
# In a whole recording, a "speaker" heard for less than this in all is far more often one
# speaker's odd segment (a laugh, a short reply said differently) than a person who said one short
# thing: below about 3 s a voice embedding is much less reliable (short-utterance speaker
# verification), and the file benchmark over-counted 7 of 24 conversations and never under
# before this rule (docs/benchmarks/speakers.md).
MIN_SPEAKER_S = 3.0


@dataclass
class Speakers:
    max_speakers: int = MAX_SPEAKERS
    same: float = SAME
    sums: list[np.ndarray] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def centroids(self) -> np.ndarray:
        if not self.sums:
            return np.zeros((0, 0), np.float32)
        stacked = np.stack(self.sums)
        norms: np.ndarray = stacked / np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
        return norms

    def assign(self, voice: Sequence[float] | np.ndarray, seconds: float = MIN_NEW_S) -> tuple[int, float]:
        """The speaker of an utterance with this embedding (of `seconds` of speech), and how
        close it is to that speaker's voice (cosine, 0-1)."""
        v = np.asarray(voice, dtype=np.float32)
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        if self.sums:
            sims = self.centroids() @ v
            best = int(np.argmax(sims))
            if sims[best] >= self.same or len(self.sums) >= self.max_speakers or seconds < MIN_NEW_S:
                self.sums[best] = self.sums[best] + v
                self.counts[best] += 1
                return best, float(max(0.0, min(1.0, sims[best])))
        self.sums.append(v)
        self.counts.append(1)
        return len(self.sums) - 1, 1.0

    def nearest(self, voice: list[float] | np.ndarray) -> int:
        v = np.asarray(voice, dtype=np.float32)
        return int(np.argmax(self.centroids() @ v))

    def dump(self) -> dict[str, Any]:
        return {
            "max": self.max_speakers,
            "sums": [[round(float(x), 5) for x in s] for s in self.sums],
            "counts": list(self.counts),
        }

    @classmethod
    def load(cls, obj: dict[str, Any]) -> Speakers:
        return cls(
            max_speakers=int(obj.get("max", MAX_SPEAKERS)),
            sums=[np.asarray(s, dtype=np.float32) for s in obj.get("sums", [])],
            counts=[int(c) for c in obj.get("counts", [])],
        )


def label_all(
    voices: Sequence[Sequence[float] | None], seconds: Sequence[float], max_speakers: int = MAX_SPEAKERS
) -> list[int | None]:
    """Speakers of a whole recording's segments (each with its embedding, None when it has
    none, and its length), in two passes: the segments of MIN_NEW_S or more online, as a live
    session would, then every segment to the nearest of the speakers found (an early segment is
    judged with everything heard later). A speaker left with less than MIN_SPEAKER_S of speech
    in all is merged into the nearest other, smallest first. Labels by first appearance."""
    first = Speakers(max_speakers)
    long_enough = [v for v, s in zip(voices, seconds) if v is not None and s >= MIN_NEW_S]
    for v in long_enough or [v for v in voices if v is not None]:
        first.assign(v)
    if not first.sums:
        return [None for _ in voices]
    centroids = first.centroids()
    keep = list(range(len(centroids)))
    while True:
        nearest = [
            keep[int(np.argmax(centroids[keep] @ np.asarray(v, np.float32)))] if v is not None else None for v in voices
        ]
        heard = dict.fromkeys(keep, 0.0)
        for n, s in zip(nearest, seconds):
            if n is not None:
                heard[n] += s
        smallest = min(keep, key=lambda k: heard[k])
        if len(keep) == 1 or heard[smallest] >= MIN_SPEAKER_S:
            break
        keep.remove(smallest)
    order: dict[int, int] = {}
    for n in nearest:
        if n is not None and n not in order:
            order[n] = len(order)
    return [order[n] if n is not None else None for n in nearest]
