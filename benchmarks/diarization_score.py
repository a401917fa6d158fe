"""Scoring a diarization run (benchmarks/diarization.py): turns labelled right after the best
mapping of labels to speakers, DER with a collar, speaker-verification EER, percentiles."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np


def score(spans: list[tuple[float, float, str]], finals: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(turns labelled right, turns, labels used): each turn is judged by the final that
    overlaps it most (a final that merged two turns can be right for one of them only)."""
    of_turn: list[int | None] = []
    for s, e, _ in spans:
        overlaps = [max(0.0, min(f["end"], e) - max(f["start"], s)) for f in finals]
        of_turn.append(int(np.argmax(overlaps)) if overlaps and max(overlaps) > 0 else None)
    labels = sorted({f.get("speaker", -1) for f in finals})
    speakers = sorted({who for _, _, who in spans})
    best = 0
    for perm in itertools.permutations(speakers + [None] * max(0, len(labels) - len(speakers)), len(labels)):
        mapping = dict(zip(labels, perm))
        right = sum(
            1
            for (_, _, who), n in zip(spans, of_turn)
            if n is not None and mapping[finals[n].get("speaker", -1)] == who
        )
        best = max(best, right)
    return best, len(spans), len(labels)


def der(
    spans: list[tuple[float, float, str]], segments: list[dict[str, Any]], collar: float = 0.25
) -> dict[str, float]:
    """Diarization error rate in 10 ms frames, `collar` seconds either side of each reference
    turn's ends not scored: (missed + false alarm + confusion) / reference speech, with the best
    one-to-one mapping of labels to speakers; and the confusion alone."""
    end = max([e for _, e, _ in spans] + [float(s["end"]) for s in segments]) + 1.0
    n = int(end * 100)
    ref: list[str | None] = [None] * n
    scored = np.ones(n, bool)
    for s, e, who in spans:
        for i in range(int(s * 100), min(n, int(e * 100))):
            ref[i] = who
        for edge in (s, e):
            scored[max(0, int((edge - collar) * 100)) : min(n, int((edge + collar) * 100))] = False
    hyp: list[str | None] = [None] * n
    for seg in segments:
        for i in range(int(float(seg["start"]) * 100), min(n, int(float(seg["end"]) * 100))):
            hyp[i] = seg.get("speaker")
    labels = sorted({h for h in hyp if h is not None})
    speakers = sorted({who for _, _, who in spans})
    frames = [i for i in range(n) if scored[i]]
    speech = sum(1 for i in frames if ref[i] is not None)
    missed = sum(1 for i in frames if ref[i] is not None and hyp[i] is None)
    false_alarm = sum(1 for i in frames if ref[i] is None and hyp[i] is not None)
    best_confusion = speech
    both = [(ref[i], hyp[i]) for i in frames if ref[i] is not None and hyp[i] is not None]
    options: list[str | None] = [*speakers, *[None] * max(0, len(labels) - len(speakers))]
    for perm in itertools.permutations(options, len(labels)):
        mapping = dict(zip(labels, perm))
        confusion = sum(1 for r, h in both if mapping[str(h)] != r)
        best_confusion = min(best_confusion, confusion)
    return {
        "der": (missed + false_alarm + best_confusion) / max(1, speech),
        "confusion": best_confusion / max(1, speech),
        "speech_frames": float(speech),
    }


def eer(embeddings: np.ndarray, speakers: list[str]) -> float:
    sims = embeddings @ embeddings.T
    iu = np.triu_indices(len(speakers), 1)
    same = (np.array(speakers)[:, None] == np.array(speakers)[None, :])[iu]
    scores = sims[iu]
    best = 1.0
    for th in np.linspace(0, 1, 1001):
        far = float(np.mean(scores[~same] >= th))
        frr = float(np.mean(scores[same] < th))
        best = min(best, max(far, frr))
    return best
