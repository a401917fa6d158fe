"""Each utterance's audio, kept in the gateway until its final is delivered.

Redis replicates asynchronously: when its primary dies, the promoted replica may lack the
newest audio appends of an utterance whose final job did survive (or is queued again). The
gateway that took the audio keeps a copy of every utterance with a final outstanding, and
writes it again before it re-queues that final (decoder/streams.py treats a job whose audio is
missing or short as "not yet" for a while). Bounded: the open utterance (at most
MAX_UTTERANCE_S) and the finals a session may have outstanding (MAX_PENDING_FINALS).
"""

from __future__ import annotations


class HeldAudio:
    def __init__(self) -> None:
        self._by_utt: dict[int, bytearray] = {}
        self._partial: set[int] = set()  # begun before this gateway held them (a takeover)

    def add(self, utt: int, pcm16k: bytes, offset: int) -> None:
        """The utterance's audio at `offset` (its length so far), as written to its audio key."""
        if utt in self._partial:
            return
        held = self._by_utt.setdefault(utt, bytearray())
        if offset > len(held):
            # Its beginning was taken by the gateway before this one: a copy without it would
            # overwrite the key's start with later audio, so this utterance is not held.
            self._partial.add(utt)
            del self._by_utt[utt]
            return
        del held[offset:]
        held.extend(pcm16k)

    def of(self, utt: int) -> bytes | None:
        held = self._by_utt.get(utt)
        return bytes(held) if held else None

    def release(self, *utts: int) -> None:
        for n in utts:
            self._by_utt.pop(n, None)
            self._partial.discard(n)

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self._by_utt.values())
