"""How benchmarks/accuracy.py scores a run: errors attributed to sentences through one
edit-distance alignment per conversation, WER overall and per voice, corpus, gender and length,
the sentences where the streamed text lost most against the direct one, and the interims'
checks (finals that contradict an announced stable prefix, interim artifacts); and the report
it prints."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from benchmarks.evalset import LENGTHS, Conversation, Session
from stt.bench import pct
from stt.wer import align, normalize


def length_class(seconds: float, lengths: dict[str, tuple[float, float]]) -> str:
    return next(name for name, (lo, hi) in lengths.items() if lo <= seconds < hi)


@dataclass
class Tally:
    words: int = 0
    streamed: int = 0
    direct: int = 0

    def add(self, words: int, streamed: int, direct: int) -> None:
        self.words += words
        self.streamed += streamed
        self.direct += direct

    def row(self) -> dict[str, Any]:
        return {
            "words": self.words,
            "wer_streamed": round(100.0 * self.streamed / max(1, self.words), 2),
            "wer_direct": round(100.0 * self.direct / max(1, self.words), 2),
        }


SENTENCE_BREAK = re.compile(r"[.?!]\s+\w")


def interim_checks(sessions: list[Session]) -> dict[str, Any]:
    """Rewrites of announced stable prefixes (as text, and as words: case and punctuation aside),
    and interim artifacts: empty text, "...", more sentence breaks than the final has."""
    finals_with_stable = rewritten = rewritten_words = empty = dots = breaks = total = 0
    examples: list[dict[str, str]] = []
    break_examples: list[dict[str, str]] = []
    for s in sessions:
        final_by_utt = {f["utterance"]: f for f in s.finals}
        last_stable: dict[int, str] = {}
        for m in s.interims:
            total += 1
            text = m["text"]
            empty += not text.strip()
            dots += "..." in text or "\u2026" in text
            final = final_by_utt.get(m["utterance"])
            if final is not None and len(SENTENCE_BREAK.findall(text)) > len(SENTENCE_BREAK.findall(final["text"])):
                breaks += 1
                if len(break_examples) < 5:
                    break_examples.append({"interim": text, "final": final["text"]})
            if m["stable_chars"]:
                last_stable[m["utterance"]] = text[: m["stable_chars"]]
        for utt, stable in last_stable.items():
            final = final_by_utt.get(utt)
            if final is None:
                continue
            finals_with_stable += 1
            if not final["text"].startswith(stable):
                rewritten += 1
                if len(examples) < 10:
                    examples.append({"stable": stable, "final": final["text"]})
            words = normalize(stable)
            rewritten_words += normalize(final["text"])[: len(words)] != words
    return {
        "interims": total,
        "empty": empty,
        "ellipsis": dots,
        "sentence_breaks": breaks,
        "finals_with_stable_prefix": finals_with_stable,
        "finals_rewriting_stable_prefix": rewritten,
        "rewrite_rate": round(rewritten / max(1, finals_with_stable), 4),
        "word_rewrite_rate": round(rewritten_words / max(1, finals_with_stable), 4),
        "rewrite_examples": examples,
        "break_examples": break_examples,
    }


def score(
    convs: list[Conversation],
    sessions: list[Session],
    direct_texts: list[str],
    lengths: dict[str, tuple[float, float]] = LENGTHS,
) -> dict[str, Any]:
    overall: Tally = Tally()
    by_voice: dict[str, Tally] = {}
    by_length: dict[str, Tally] = {}
    by_corpus: dict[str, Tally] = {}
    by_gender: dict[str, Tally] = {}
    diffs: list[dict[str, Any]] = []
    for conv, sess, dtext in zip(convs, sessions, direct_texts):
        ref_words = [normalize(t) for t in conv.speech.texts]
        flat = [w for ws in ref_words for w in ws]
        a_s, a_d = align(flat, normalize(sess.text)), align(flat, normalize(dtext))
        pos = 0
        for i, (text, words, span) in enumerate(zip(conv.speech.texts, ref_words, conv.speech.spans)):
            lo, hi = pos, pos + len(words)
            pos = hi
            es, ed = a_s.errors_in(lo, hi), a_d.errors_in(lo, hi)
            meta = conv.meta[i] if i < len(conv.meta) else {}
            seconds = meta.get("seconds", span[1] - span[0])
            overall.add(len(words), es, ed)
            by_voice.setdefault(conv.voice, Tally()).add(len(words), es, ed)
            by_length.setdefault(length_class(seconds, lengths), Tally()).add(len(words), es, ed)
            by_corpus.setdefault(meta.get("corpus", "-"), Tally()).add(len(words), es, ed)
            by_gender.setdefault(meta.get("gender", "-"), Tally()).add(len(words), es, ed)
            if es != ed:
                diffs.append(
                    {
                        "conversation": conv.name,
                        "reference": text,
                        "streamed": a_s.hyp_in(lo, hi),
                        "direct": a_d.hyp_in(lo, hi),
                        "streamed_errors": es,
                        "direct_errors": ed,
                    }
                )
    diffs.sort(key=lambda d: d["direct_errors"] - d["streamed_errors"])
    utterances = sum(len(c.speech.texts) for c in convs)
    latencies = [x for s in sessions for x in s.latencies_ms]
    return {
        "utterances": utterances,
        **overall.row(),
        "by_voice": {k: v.row() for k, v in by_voice.items()},
        "by_corpus": {k: v.row() for k, v in by_corpus.items()},
        "by_gender": {k: v.row() for k, v in by_gender.items()},
        "by_length": {k: by_length[k].row() for k in lengths if k in by_length},
        "worst": diffs[:12],
        "better_than_direct": sum(d["streamed_errors"] < d["direct_errors"] for d in diffs),
        "worse_than_direct": sum(d["streamed_errors"] > d["direct_errors"] for d in diffs),
        "sessions_failed": [s.error for s in sessions if s.error],
        "final_latency_ms": {"p50": pct(latencies, 50), "p95": pct(latencies, 95)},
        "interims": interim_checks(sessions),
    }


def print_report(r: dict[str, Any]) -> None:
    print(
        "\n%d utterances, %d words: WER streamed %.2f%%, direct %.2f%% (final latency p50 %s ms, p95 %s ms)"
        % (
            r["utterances"],
            r["words"],
            r["wer_streamed"],
            r["wer_direct"],
            r["final_latency_ms"]["p50"],
            r["final_latency_ms"]["p95"],
        )
    )
    for title, key in (
        ("corpus", "by_corpus"),
        ("gender", "by_gender"),
        ("voice", "by_voice"),
        ("length", "by_length"),
    ):
        print("\n%-22s %6s %9s %9s" % (title, "words", "streamed", "direct"))
        for name, row in r[key].items():
            print("%-22s %6d %8.2f%% %8.2f%%" % (name, row["words"], row["wer_streamed"], row["wer_direct"]))
    print("\nsentences streamed worse than direct: %d, better: %d" % (r["worse_than_direct"], r["better_than_direct"]))
    for d in r["worst"]:
        if d["streamed_errors"] <= d["direct_errors"]:
            break
        print(
            "  [%s] ref: %s\n      streamed (%d): %s\n      direct   (%d): %s"
            % (d["conversation"], d["reference"], d["streamed_errors"], d["streamed"], d["direct_errors"], d["direct"])
        )
    i = r["interims"]
    print(
        "\ninterims %d: empty %d, '...' %d, sentence breaks %d; finals rewriting their stable prefix %d of %d "
        "(%.1f%%; as words %.1f%%)"
        % (
            i["interims"],
            i["empty"],
            i["ellipsis"],
            i["sentence_breaks"],
            i["finals_rewriting_stable_prefix"],
            i["finals_with_stable_prefix"],
            100 * i["rewrite_rate"],
            100 * i["word_rewrite_rate"],
        )
    )
    if r["sessions_failed"]:
        print("sessions failed: %s" % r["sessions_failed"])


# --- running ----------------------------------------------------------------------------------
