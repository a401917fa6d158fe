"""Which waiting interims to decode next.

Rules (DESIGN.md, Decoder): an interim past its deadline is dropped undecoded; of several
waiting interims of one session only the newest is worth decoding (the gateway keeps one in
flight, so this is rare); and no session gets a second decode before every waiting session got
one: sessions are served least-recently-served first. The first interim of an utterance (rev 0)
goes before later revisions of others: under load it is what tells a speaker they are heard,
while a later revision only refines words already shown.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from decoder.streams import Entry


@dataclass
class Selection:
    chosen: list[Entry] = field(default_factory=list)
    stale: list[Entry] = field(default_factory=list)
    superseded: list[Entry] = field(default_factory=list)


class InterimQueue:
    """Interims this decoder has read and not yet decoded (they sit in its pending list)."""

    def __init__(self) -> None:
        self.waiting: list[Entry] = []
        self._last_served: dict[str, int] = {}
        self._tick = itertools.count(1)

    def __len__(self) -> int:
        return len(self.waiting)

    def add(self, entries: list[Entry]) -> None:
        self.waiting.extend(entries)

    def take(self, limit: int, now_ms: int) -> Selection:
        sel = Selection()
        newest: dict[str, Entry] = {}
        for e in self.waiting:
            assert e.job is not None
            if e.job.deadline and e.job.deadline < now_ms:
                sel.stale.append(e)
                continue
            held = newest.get(e.job.session)
            if held is None:
                newest[e.job.session] = e
            elif (e.job.utt, e.job.rev) > (held.job.utt, held.job.rev):  # type: ignore[union-attr]
                sel.superseded.append(held)
                newest[e.job.session] = e
            else:
                sel.superseded.append(e)
        order = sorted(
            newest.values(),
            key=lambda e: (
                e.job.rev > 0,  # type: ignore[union-attr]
                self._last_served.get(e.job.session, 0),  # type: ignore[union-attr]
                e.entry_id,
            ),
        )
        sel.chosen = order[:limit]
        self.waiting = order[limit:]
        for e in sel.chosen:
            self._last_served[e.job.session] = next(self._tick)  # type: ignore[union-attr]
        if len(self._last_served) > 10000:
            # Forget sessions long gone; they would sort first anyway if they came back.
            keep = sorted(self._last_served.items(), key=lambda kv: kv[1])[-5000:]
            self._last_served = dict(keep)
        return sel

    def drain(self) -> list[Entry]:
        out, self.waiting = self.waiting, []
        return out
