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

    def add(self, utt: int, pcm16k: bytes, offset: int) -> None:
        """The utterance's audio at `offset` (its length so far), as written to its audio key."""
        held = self._by_utt.setdefault(utt, bytearray())
        del held[offset:]
        held.extend(pcm16k)

    def of(self, utt: int) -> bytes | None:
        held = self._by_utt.get(utt)
        return bytes(held) if held else None

    def release(self, *utts: int) -> None:
        for n in utts:
            self._by_utt.pop(n, None)

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self._by_utt.values())
