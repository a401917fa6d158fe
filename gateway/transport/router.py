"""Result routing: one pub/sub subscription per gateway process, results to whatever awaits
them there: a live session, or an uploaded file (each in a registry of its own).

After a lost connection the subscription is made again and every receiver re-queues its pending
work (results published meanwhile were lost with the connection; the decoders' result cache
answers the re-queued jobs without decoding twice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common import keys
from common.backoff import Backoff
from common.errors import SchemaError
from common.lifecycle import StopFlag
from common.messages import Result, decode_result
from common.redisconn import close_pubsub
from gateway.files.upload import FileTranscription
from gateway.transport.driver import SessionDriver

logger = logging.getLogger(__name__)
PING_S = 1.0  # a quiet subscription is pinged this often
SILENCE_S = 3.0  # and given up (then made again) after this long without a word


class Receiver(Protocol):
    """What results are routed to: its id is the jobs' `session` field."""

    @property
    def id(self) -> str: ...

    def on_result(self, result: Result) -> None: ...

    async def requeue_pending(self) -> None:
        """Ask again for what may have been missed."""
        ...

    def abandon(self, why: str) -> None:
        """Handling it failed: it ends, with what it owes as errors."""
        ...


class ResultRouter:
    def __init__(self, redis: aioredis.Redis, gateway_id: str) -> None:
        self.redis = redis
        self.channel = keys.results_channel(gateway_id)
        self.sessions: dict[str, SessionDriver] = {}
        self.files: dict[str, FileTranscription] = {}
        self.subscribed = asyncio.Event()

    def add(self, session: SessionDriver) -> None:
        self.sessions[session.id] = session

    def remove(self, session: SessionDriver) -> None:
        self.sessions.pop(session.id, None)

    def add_file(self, file: FileTranscription) -> None:
        self.files[file.id] = file

    def remove_file(self, file: FileTranscription) -> None:
        self.files.pop(file.id, None)

    def receivers(self) -> list[Receiver]:
        return [*self.sessions.values(), *self.files.values()]

    def _receiver(self, receiver_id: str) -> Receiver | None:
        return self.sessions.get(receiver_id) or self.files.get(receiver_id)

    def _forget(self, receiver: Receiver) -> None:
        self.sessions.pop(receiver.id, None)
        self.files.pop(receiver.id, None)

    async def run(self, stop: StopFlag) -> None:
        backoff = Backoff()
        while not stop.requested:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                if backoff.failing:
                    logger.info(
                        "resubscribed to %s; re-queueing pending work of %d sessions and %d files",
                        self.channel,
                        len(self.sessions),
                        len(self.files),
                    )
                    for receiver in self.receivers():
                        await receiver.requeue_pending()
                    backoff.reset()
                await self._listen(pubsub, stop)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.subscribed.clear()
                delay = backoff.next()
                logger.warning("result channel lost (%s); resubscribing in %.1fs", exc, delay)
                await stop.sleep(delay)
            finally:
                try:
                    await close_pubsub(pubsub)
                except (RedisConnectionError, OSError):
                    pass

    async def _listen(self, pubsub: Any, stop: StopFlag) -> None:
        # A subscriber only reads, so a server that vanished without a word (its host lost, as
        # in a failover) would go unnoticed for good: it is pinged when quiet, and a silence
        # past SILENCE_S counts as a lost connection.
        heard = pinged = time.monotonic()
        while not stop.requested:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            now = time.monotonic()
            if msg is not None:
                heard = now
                if msg.get("type") == "message":
                    self._dispatch(msg["data"])
            elif now - heard > SILENCE_S:
                raise RedisTimeoutError("no answer on the result channel for %.0f s" % SILENCE_S)
            if now - heard >= PING_S and now - pinged >= PING_S:
                pinged = now
                await pubsub.ping()

    def _dispatch(self, data: bytes) -> None:
        try:
            result = decode_result(data)
        except SchemaError as exc:
            logger.error("unreadable result on %s: %s", self.channel, exc)
            return
        receiver = self._receiver(result.session)
        if receiver is None:
            logger.debug("result %s for a session no longer here", result.id)
            return
        try:
            receiver.on_result(result)
        except Exception as exc:
            # One session's bug (or a result it cannot take) ends that session, never the router.
            logger.exception("session %s: result %s could not be handled; abandoning it", receiver.id, result.id)
            self._forget(receiver)
            receiver.abandon("a result could not be handled: %s" % type(exc).__name__)
