"""The final lane's gate: each final-lane job id is decoded once, whichever decoders read it.

A final and the speculative job it stands for share a job id (the gateway queues the final
under the speculative job's id when the endpoint confirms it), and either may be read first,
by any decoder. Before a final-lane run one round trip asks Redis, for each job, for its
cached result, whether it was cancelled, and takes its decoding lease (SET NX, renewed while
the decode runs):

- cached: a final is answered from the cache (its gateway may have missed the result); a
  speculative job is only acknowledged (its result was published when it was decoded);
- cancelled (a speculative job whose speaker went on, or a final of a session gone for good):
  acknowledged undecoded;
- another decoder holds the lease (it is decoding the same id now): the job is parked here, in
  this decoder's pending list, until that result is in (then delivered from the cache) or the
  lease lapses without one (a decoder that died: the job goes back to be decoded here);
- otherwise it is decoded. In one run, the second entry of a job id is acknowledged after the
  first is delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from common.messages import JobKind
from decoder.streams import BadEntry, Entry, JobStreams

logger = logging.getLogger(__name__)

LEASE_MS = 3000  # a decoding lease; renewed every LEASE_MS / 3 while the decode runs

Count = Callable[[Sequence[Entry | BadEntry], str], None]


class FinalGate:
    def __init__(self, streams: JobStreams, count: Count, cache_ttl_s: int) -> None:
        self.streams = streams
        self.count = count
        self.cache_ttl_s = cache_ttl_s
        self.parked: list[Entry] = []  # final-lane jobs another decoder is decoding

    async def admit(self, entries: list[Entry]) -> tuple[list[Entry], list[Entry]]:
        """Of a final-lane run: the jobs to decode, and the twins (a second entry of a job id
        in the run) to acknowledge once the first is delivered."""
        first = {e.job.id: e for e in reversed(entries)}
        twins = [e for e in entries if first[e.job.id] is not e]
        entries = [e for e in entries if first[e.job.id] is e]
        checks = await self.streams.preflight([e.job for e in entries], LEASE_MS)
        todo, cached, dropped = [], [], []
        for e, check in zip(entries, checks):
            if check.cached is not None and e.kind == JobKind.SPECULATIVE:
                dropped.append((e, "cached"))
            elif check.cached is not None:
                cached.append((e, check.cached))
            elif check.cancelled:
                dropped.append((e, "cancelled"))
            elif not check.mine:
                logger.info("job %s is being decoded by another decoder: waiting for its result", e.label)
                self.parked.append(e)
            else:
                todo.append(e)
        if dropped:
            await self.streams.ack([e for e, _ in dropped])
            for e, outcome in dropped:
                self.count([e], outcome)
        await self._deliver_cached(cached)
        return todo, twins

    async def recheck(self) -> list[Entry]:
        """Deliver the parked jobs whose result is in; those whose decoder stopped without one
        are returned, to be decoded here."""
        states = await self.streams.elsewhere([e.job for e in self.parked])
        waiting, back, cached = [], [], []
        for e, (result, held) in zip(self.parked, states):
            if result is not None:
                cached.append((e, result))
            elif held:
                waiting.append(e)
            else:
                logger.info("job %s: the decoder decoding it stopped; decoding it here", e.label)
                back.append(e)
        self.parked = waiting
        await self._deliver_cached(cached)
        return back

    async def _deliver_cached(self, cached: list[tuple[Entry, bytes]]) -> None:
        if not cached:
            return
        for e, _ in cached:
            logger.info("job %s answered from the result cache", e.label)
        await self.streams.deliver(list(cached), self.cache_ttl_s)
        self.count([e for e, _ in cached], "cached")
