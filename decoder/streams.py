"""The decoder's Redis side: reading jobs with priority, claiming, acknowledging, publishing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from common import keys, queues
from common.clock import now_ms
from common.errors import AudioError, AudioMissing, SchemaError
from common.messages import Job, JobKind, Result, decode_job, encode_result
from decoder.doubling import LOOKAHEAD_S

logger = logging.getLogger(__name__)
LOOKAHEAD_BYTES = int(LOOKAHEAD_S * 16000) * 2


@dataclass
class Entry:
    """A stream entry read as a job."""

    stream: str
    entry_id: str
    raw: bytes
    job: Job
    deliveries: int = 1

    @property
    def kind(self) -> JobKind:
        return self.job.kind

    @property
    def label(self) -> str:
        return self.job.id

    @property
    def entry_order(self) -> tuple[int, int]:
        return _id_order(self.entry_id)


@dataclass
class BadEntry:
    """A stream entry that is not a job this decoder can read, and why."""

    stream: str
    entry_id: str
    raw: bytes | None
    problem: str
    deliveries: int = 1

    @property
    def label(self) -> str:
        return "%s/%s" % (self.stream, self.entry_id)


@dataclass
class Preflight:
    """What Redis says of a final-lane job about to be decoded."""

    cached: bytes | None  # its result, already published once
    cancelled: bool  # a job no longer wanted (keys.cancelled_key)
    mine: bool  # False: another decoder is decoding the same job id now


@dataclass
class Read:
    """Entries read at once: the jobs, and the entries that are not."""

    jobs: list[Entry] = field(default_factory=list)
    bad: list[BadEntry] = field(default_factory=list)

    def add(self, entry: Entry | BadEntry) -> None:
        if isinstance(entry, Entry):
            self.jobs.append(entry)
        else:
            self.bad.append(entry)

    def __bool__(self) -> bool:
        return bool(self.jobs or self.bad)

    def __len__(self) -> int:
        return len(self.jobs) + len(self.bad)


def _to_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


def parse_entry(stream: str, entry_id: Any, fields: dict[bytes, bytes] | None, deliveries: int = 1) -> Entry | BadEntry:
    raw = (fields or {}).get(keys.JOB_FIELD)
    eid = _to_str(entry_id)
    if raw is None:
        return BadEntry(stream, eid, raw, "entry has no %r field" % keys.JOB_FIELD.decode(), deliveries)
    try:
        job = decode_job(raw)
    except SchemaError as exc:
        return BadEntry(stream, eid, raw, str(exc), deliveries)
    expected = keys.kind_of(stream)
    if job.kind != expected:
        return BadEntry(stream, eid, raw, "a %s job on %s" % (job.kind, stream), deliveries)
    return Entry(stream, eid, raw, job, deliveries)


class JobStreams:
    def __init__(self, redis: aioredis.Redis, consumer: str) -> None:
        self.redis = redis
        self.consumer = consumer
        self._claim_cursor = {stream: "0-0" for stream in keys.STREAMS}

    async def ensure_groups(self) -> None:
        for stream in keys.STREAMS:
            try:
                await self.redis.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
                logger.info("created consumer group %s on %s", keys.GROUP, stream)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, kinds: tuple[JobKind, ...], count: int, block_ms: int | None) -> Read:
        """New entries of the streams of `kinds` (up to `count` of each), waiting up to `block_ms`
        for one (None: not at all)."""
        out = Read()
        if not kinds:
            return out
        streams: dict[Any, Any] = {keys.stream_for(kind): ">" for kind in kinds}
        reply: Any = await self.redis.xreadgroup(keys.GROUP, self.consumer, streams, count=count, block=block_ms)
        for stream, items in reply or []:
            name = _to_str(stream)
            for entry_id, fields in items:
                out.add(parse_entry(name, entry_id, fields))
        return out

    async def claim_own_pending(self, count: int) -> Read:
        """Entries this consumer was given before a restart or a lost connection, claimed again
        (XCLAIM counts a delivery, where re-reading with XREADGROUP would not): a job that kills
        its decoder every time reaches MAX_DELIVERIES like any other, even when the decoder
        comes back under the same name."""
        out = Read()
        for stream in keys.STREAMS:
            pending: Any = await self.redis.xpending_range(
                stream, keys.GROUP, min="-", max="+", count=count, consumername=self.consumer
            )
            if not pending:
                continue
            times = {_to_str(p["message_id"]): int(p["times_delivered"]) + 1 for p in pending}
            claimed: Any = await self.redis.xclaim(stream, keys.GROUP, self.consumer, 0, list(times))
            for entry_id, fields in claimed:
                if fields is None:
                    continue  # deleted meanwhile (its job was done); XCLAIM drops it from the list
                out.add(parse_entry(stream, entry_id, fields, times.get(_to_str(entry_id), 1)))
        return out

    async def keep_claimed(self, entries: list[Entry]) -> None:
        """Reset the idle time of the entries in hand that are still this consumer's, without
        counting a delivery (XCLAIM JUSTID): a long decode is not mistaken for a dead decoder."""
        for stream in {e.stream for e in entries}:
            ids = [e.entry_id for e in entries if e.stream == stream]
            first, last = min(ids, key=_id_order), max(ids, key=_id_order)
            pending: Any = await self.redis.xpending_range(
                stream, keys.GROUP, min=first, max=last, count=len(ids) + 1000, consumername=self.consumer
            )
            mine: list[Any] = [_to_str(p["message_id"]) for p in pending if _to_str(p["message_id"]) in ids]
            if mine:
                await self.redis.xclaim(stream, keys.GROUP, self.consumer, 0, mine, justid=True)

    async def claim_idle(self, stream: str, min_idle_ms: int, count: int) -> Read:
        """XAUTOCLAIM entries idle in other consumers (a crashed decoder) and learn how often
        each was delivered."""
        reply = await self.redis.xautoclaim(
            stream, keys.GROUP, self.consumer, min_idle_ms, start_id=self._claim_cursor[stream], count=count
        )
        self._claim_cursor[stream] = _to_str(reply[0])
        claimed = [(_to_str(eid), fields) for eid, fields in reply[1] if eid]
        out = Read()
        if not claimed:
            return out
        pipe = self.redis.pipeline(transaction=False)
        for eid, _ in claimed:
            pipe.xpending_range(stream, keys.GROUP, min=eid, max=eid, count=1)
        for (eid, fields), info in zip(claimed, await pipe.execute()):
            out.add(parse_entry(stream, eid, fields, int(info[0]["times_delivered"]) if info else 1))
        return out

    async def prune_consumers(self, min_idle_ms: int) -> list[str]:
        """Remove the consumers of dead decoders: those that hold no entries and have not read
        for `min_idle_ms` (a live one reads every second or so; one that returns is re-created by
        its next read)."""
        removed = []
        for stream in keys.STREAMS:
            consumers: Any = await self.redis.xinfo_consumers(stream, keys.GROUP)
            for consumer in consumers:
                name = _to_str(consumer["name"])
                if name != self.consumer and int(consumer["pending"]) == 0 and int(consumer["idle"]) >= min_idle_ms:
                    await self.redis.xgroup_delconsumer(stream, keys.GROUP, name)
                    removed.append("%s/%s" % (stream, name))
        return removed

    async def ack(self, entries: Sequence[Entry | BadEntry], pipe: Any = None) -> None:
        """Acknowledge and trim (common/queues.py), and give up the decoding leases of final-lane
        jobs."""
        own = pipe is None
        pipe = pipe if pipe is not None else self.redis.pipeline(transaction=True)
        for stream in {e.stream for e in entries}:
            ids = [e.entry_id for e in entries if e.stream == stream]
            pipe.eval(queues.ACK_AND_TRIM, 1, stream, keys.GROUP, *ids)
        leases = [keys.decoding_key(e.job.id) for e in entries if isinstance(e, Entry) and e.kind.decodes_as_final]
        if leases:
            pipe.delete(*leases)
        if own:
            await pipe.execute()

    async def dead_letter(self, entry: Entry | BadEntry, reason: str, decoder: str) -> None:
        """Move an entry to the dead stream; its utterance gets an error result if we know whose."""
        pipe = self.redis.pipeline(transaction=True)
        fields: dict[Any, Any] = {
            "stream": entry.stream,
            "entry": entry.entry_id,
            "reason": reason,
            "decoder": decoder,
            "deliveries": entry.deliveries,
            "at": now_ms(),
        }
        if entry.raw is not None:
            fields["job"] = entry.raw
        pipe.xadd(keys.STREAM_DEAD, fields, maxlen=keys.DEAD_MAXLEN, approximate=True)
        if isinstance(entry, Entry):
            result = Result.failure(entry.job, "dead-lettered: %s" % reason, decoder)
            self._publish(pipe, entry.job, result, cache_ttl=None)
        await self.ack([entry], pipe)
        await pipe.execute()

    async def cached_results(self, jobs: list[Job]) -> list[bytes | None]:
        if not jobs:
            return []
        replies: list[Any] = await self.redis.mget([keys.result_key(j.id) for j in jobs])
        return replies

    async def preflight(self, jobs: list[Job], lease_ms: int) -> list[Preflight]:
        """Before decoding final-lane jobs: each one's cached result, whether it was cancelled (a
        speculative job whose speaker went on), and whether this decoder now holds its decoding
        lease (SET NX: when another decoder holds it, that one is decoding the same job id)."""
        if not jobs:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job in jobs:
            pipe.get(keys.result_key(job.id))
            pipe.exists(keys.cancelled_key(job.id))
            pipe.set(keys.decoding_key(job.id), self.consumer, nx=True, px=lease_ms)
            pipe.get(keys.decoding_key(job.id))
        replies = await pipe.execute()
        out = []
        for i in range(len(jobs)):
            cached, cancelled, _, holder = replies[4 * i : 4 * i + 4]
            out.append(Preflight(cached, bool(cancelled), holder is None or _to_str(holder) == self.consumer))
        return out

    async def renew_leases(self, jobs: list[Job], lease_ms: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for job in jobs:
            pipe.set(keys.decoding_key(job.id), self.consumer, px=lease_ms)
        await pipe.execute()

    async def elsewhere(self, jobs: list[Job]) -> list[tuple[bytes | None, bool]]:
        """For jobs another decoder was decoding: each one's result if it is in, and whether the
        other decoder still holds its lease."""
        pipe = self.redis.pipeline(transaction=False)
        for job in jobs:
            pipe.get(keys.result_key(job.id))
            pipe.exists(keys.decoding_key(job.id))
        replies = await pipe.execute()
        return [(replies[2 * i], bool(replies[2 * i + 1])) for i in range(len(jobs))]

    async def fetch_audio(self, jobs: list[Job]) -> list[tuple[bytes | AudioError, bytes | None, bytes]]:
        """Each job's byte range of its utterance's audio, or why it cannot be had; its context
        audio (None when it has none, or it is gone: it then decodes without); and, for a final,
        up to LOOKAHEAD_S of the audio after its range (a final said twice is decoded again
        with it: decoder/doubling.py)."""
        if not jobs:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job in jobs:
            pipe.getrange(job.audio_key, 0, max(job.audio_end, 1) - 1)
            pipe.strlen(job.audio_key)
            pipe.getrange(job.context_key or job.audio_key, 0, max(job.context_end, 1) - 1)
            if job.kind in (JobKind.FINAL, JobKind.SPECULATIVE) and job.audio_end > 0:
                pipe.getrange(job.audio_key, job.audio_end, job.audio_end + LOOKAHEAD_BYTES - 1)
            else:
                pipe.echo(b"")
        # A key of the wrong type (WRONGTYPE) fails its job alone, not the whole batch.
        replies = await pipe.execute(raise_on_error=False)
        out: list[tuple[bytes | AudioError, bytes | None, bytes]] = []
        for i, job in enumerate(jobs):
            data, total, context, after = replies[4 * i : 4 * i + 4]
            refused = next((r for r in (data, total) if isinstance(r, ResponseError)), None)
            if refused is not None:
                out.append((AudioError("audio key %s cannot be read: %s" % (job.audio_key, refused)), None, b""))
                continue
            if isinstance(context, ResponseError):
                context = b""
            after = b"" if isinstance(after, ResponseError) else bytes(after)
            total = int(total)
            if not (
                job.context_key and job.context_end > 0 and len(context) == job.context_end and job.context_end % 2 == 0
            ):
                context = None
            if total == 0:
                out.append((AudioMissing("audio key %s is missing or empty" % job.audio_key), None, b""))
            elif job.audio_end <= 0:
                out.append((AudioError("job names an empty audio range"), None, b""))
            elif total < job.audio_end:
                short = "audio truncated: %s holds %d bytes, job needs %d" % (job.audio_key, total, job.audio_end)
                out.append((AudioMissing(short), None, b""))
            elif job.audio_end % 2:
                out.append(
                    (AudioError("audio range of %d bytes is not whole 16-bit samples" % job.audio_end), None, b"")
                )
            else:
                out.append((bytes(data), bytes(context) if context is not None else None, after[: len(after) // 2 * 2]))
        return out

    def _publish(self, pipe: Any, job: Job, result: Result | bytes, cache_ttl: int | None) -> None:
        payload = result if isinstance(result, bytes) else encode_result(result)
        if cache_ttl:
            pipe.set(keys.result_key(job.id), payload, ex=cache_ttl)
        pipe.publish(keys.results_channel(job.gateway), payload)

    async def deliver(self, done: list[tuple[Entry, Result | bytes]], cache_ttl: int) -> None:
        """Cache finals, publish every result, then acknowledge: a crash before the ack leaves
        the entry to be claimed, and the cache answers it without a second decode."""
        pipe = self.redis.pipeline(transaction=False)
        for entry, result in done:
            cache = cache_ttl if entry.kind.cached and not (isinstance(result, Result) and result.error) else None
            self._publish(pipe, entry.job, result, cache)
        await self.ack([e for e, _ in done], pipe)
        await pipe.execute()
