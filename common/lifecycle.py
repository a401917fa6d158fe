"""What every long-lived async component shares: a stop flag, a wait that a stop cuts short,
and the node heartbeat that `/status` and `/ready` read.

Vocabulary, the same in every process: a signal handler calls `stop.request()` and does nothing
else; loops run `while not stop.requested` and wait with `await stop.sleep(seconds)`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common import keys
from common.clock import now_ms

logger = logging.getLogger(__name__)

# Redis going away for a while (a restart, a network blip): wait and try again, never give up on it.
REDIS_TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class StopFlag:
    """Set once (from a signal handler, a test or a shutdown), seen by every loop."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def request(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if a stop was requested meanwhile (or before)."""
        if self._event.is_set():
            return True
        try:
            await asyncio.wait_for(self._event.wait(), max(0.0, seconds))
        except TimeoutError:
            return False
        return True


class Watchdog:
    """The long-lived tasks of a process. They run until a stop; one that ends before (an
    exception, or a return it should never make) is logged with its traceback, `failed` names
    it, and `on_failure` is called so the process can fail its readiness and exit non-zero (its
    supervisor restarts it). Nothing it starts is fire-and-forget."""

    def __init__(self, stop: StopFlag, on_failure: Callable[[str], None] | None = None) -> None:
        self.stop = stop
        self.on_failure = on_failure
        self.failed: str | None = None
        self.tasks: list[asyncio.Task[Any]] = []

    def start(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._ended)
        self.tasks.append(task)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            if self.stop.requested:
                return
            error: BaseException | None = None
        else:
            error = task.exception()
            if error is None and self.stop.requested:
                return
        reason = "task %s %s" % (task.get_name(), "died: %r" % error if error else "ended before a stop")
        logger.error("%s", reason, exc_info=error)
        if self.failed is None:
            self.failed = reason
            if self.on_failure is not None:
                self.on_failure(reason)

    async def finish(self, timeout: float) -> None:
        """After a stop: give the tasks `timeout` seconds to end by themselves, then cancel them."""
        self.stop.request()
        if not self.tasks:
            return
        _done, pending = await asyncio.wait(self.tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def heartbeat(
    redis: aioredis.Redis,
    kind: str,
    node_id: str,
    fields: Callable[[], Mapping[str, str | int | float]],
    period_s: float,
    ttl_s: float,
    stop: StopFlag,
    on_beat: Callable[[], None] | None = None,
) -> None:
    """Keep `stt:node:{kind}:{id}` (and its entry in `stt:nodes:{kind}`) alive until stopped: a
    node whose heartbeat expired is gone. Then remove both. A failed beat is logged and retried
    next period: Redis may be away for a while."""
    key, index = keys.node_key(kind, node_id), keys.node_index(kind)
    started = now_ms() // 1000
    while not stop.requested:
        try:
            now = now_ms()
            beat: dict[Any, Any] = {
                "id": node_id,
                "kind": kind,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": started,
                "seen": now,
                **fields(),
            }
            pipe = redis.pipeline(transaction=True)
            pipe.hset(key, mapping=beat)
            pipe.pexpire(key, int(ttl_s * 1000))
            pipe.zadd(index, {node_id: now + int(ttl_s * 1000)})
            pipe.zremrangebyscore(index, "-inf", now)
            pipe.pexpire(index, int(ttl_s * 3000))
            await pipe.execute()
            if on_beat is not None:
                on_beat()
        except (RedisError, OSError) as exc:
            logger.debug("%s %s: heartbeat failed: %s", kind, node_id, exc)
        await stop.sleep(period_s)
    try:
        pipe = redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.zrem(index, node_id)
        await pipe.execute()
    except (RedisError, OSError) as exc:
        logger.warning("%s %s: could not remove its heartbeat: %s", kind, node_id, exc)


async def live_nodes(redis: aioredis.Redis, kind: str) -> list[dict[str, str]]:
    """The heartbeats of the live nodes of a kind (two round trips, no keyspace scan)."""
    ids: list[Any] = await redis.zrangebyscore(keys.node_index(kind), now_ms(), "+inf")
    if not ids:
        return []
    pipe = redis.pipeline(transaction=False)
    for node_id in ids:
        pipe.hgetall(keys.node_key(kind, node_id.decode() if isinstance(node_id, bytes) else node_id))
    out = []
    for info in await pipe.execute():
        if info:
            out.append({k.decode(): v.decode() for k, v in info.items()})
    return out
