"""Where each turn's end waited, read from a service's log.

    python benchmarks/turns.py --streams 1 --settings model --env LOG_LEVEL=DEBUG --service-log svc.log
    python benchmarks/turn_timeline.py svc.log

For each utterance whose final was delivered, in ms from the end of its speech (the gateway's
VAD's last speech frame): when its would-be finals were queued and decoded (and in how long),
when the end-of-turn model answered (its probability, and how long after it was asked), and when
the final went out. A turn ends when both the words and the answer are in: the last line counts
the turns that waited for the words and those that waited for the answer.
"""

from __future__ import annotations

import argparse
import datetime
import re
from collections import defaultdict
from collections.abc import Iterable

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
# (event, pattern); each pattern names the session and the utterance.
EVENTS = (
    ("queued", re.compile(r"session (\w+) utt (\d+): speculative final \S+ queued")),
    ("decoded", re.compile(r"job \S+:s\d+ \(session (\w+) utt (\d+)\) decoded in (\d+) ms")),
    ("answer", re.compile(r"\(session (\w+) utt (\d+)\): end of turn ([\d.]+) in \d+ ms, (\d+) ms after it was asked")),
    ("delivered", re.compile(r"session (\w+) utt (\d+): final delivered (\d+) ms after end of speech")),
)
WINDOW_S = 1.5  # what is shown before the end of speech (earlier events are a previous pause's)


def events(lines: Iterable[str]) -> dict[tuple[str, int], list[tuple[float, str, tuple[str, ...]]]]:
    """Each utterance's events: (unix time, event, what the line says)."""
    found: dict[tuple[str, int], list[tuple[float, str, tuple[str, ...]]]] = defaultdict(list)
    for line in lines:
        stamp = STAMP.match(line)
        if not stamp:
            continue
        t = datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(stamp.group(2)) / 1000
        for name, pattern in EVENTS:
            m = pattern.search(line)
            if m:
                found[(m.group(1), int(m.group(2)))].append((t, name, m.groups()[2:]))
                break
    return found


def timeline(utterance: list[tuple[float, str, tuple[str, ...]]]) -> tuple[str, str] | None:
    """One utterance's line, and what came last ("words" or "answer"); None if no final went out."""
    delivered = [(t, data) for t, name, data in utterance if name == "delivered"]
    if not delivered:
        return None
    t_out, (latency,) = delivered[-1]
    end = t_out - int(latency) / 1000
    parts, last = [], {"words": -1e9, "answer": -1e9}
    for t, name, data in utterance:
        if t < end - WINDOW_S or t > t_out:
            continue  # a previous pause's, or come after the turn ended (it did not wait for it)
        at = round((t - end) * 1000)
        if name == "decoded":
            parts.append("decoded %+d (%s ms)" % (at, data[0]))
            last["words"] = max(last["words"], at)
        elif name == "answer":
            parts.append("answer %s %+d (%s ms)" % (data[0], at, data[1]))
            last["answer"] = max(last["answer"], at)
        else:
            parts.append("%s %+d" % (name, at))
    return "  ".join(parts), max(last, key=lambda k: last[k])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log")
    args = p.parse_args()
    with open(args.log, errors="replace") as f:
        found = events(f)
    waited: dict[str, int] = defaultdict(int)
    for (session, utt), utterance in sorted(found.items(), key=lambda kv: kv[1][0][0]):
        line = timeline(utterance)
        if line is not None:
            print("%s utt %d: %s" % (session[:8], utt, line[0]))
            waited[line[1]] += 1
    print("turns that waited for the words: %d; for the answer: %d" % (waited["words"], waited["answer"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
