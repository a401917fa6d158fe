"""Result routing: one pub/sub subscription per gateway process, results to their session.

After a lost connection the subscription is made again and every session re-queues its pending
finals (results published meanwhile were lost with the connection; the decoders' result cache
answers the re-queued jobs without decoding twice).
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common import keys
from common.backoff import Backoff
from common.errors import SchemaError
from common.lifecycle import StopFlag
from common.messages import decode_result
from gateway.session import Session

logger = logging.getLogger(__name__)


class ResultRouter:
    def __init__(self, redis: aioredis.Redis, gateway_id: str) -> None:
        self.redis = redis
        self.channel = keys.results_channel(gateway_id)
        self.sessions: dict[str, Session] = {}
        self.subscribed = asyncio.Event()

    def add(self, session: Session) -> None:
        self.sessions[session.id] = session

    def remove(self, session: Session) -> None:
        self.sessions.pop(session.id, None)

    async def run(self, stop: StopFlag) -> None:
        backoff = Backoff()
        while not stop.requested:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                if backoff.failing:
                    logger.info(
                        "resubscribed to %s; re-queueing pending finals of %d sessions",
                        self.channel,
                        len(self.sessions),
                    )
                    for session in list(self.sessions.values()):
                        await session.requeue_pending()
                    backoff.reset()
                while not stop.requested:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                    if msg is not None and msg.get("type") == "message":
                        self._dispatch(msg["data"])
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self.subscribed.clear()
                delay = backoff.next()
                logger.warning("result channel lost (%s); resubscribing in %.1fs", exc, delay)
                await stop.sleep(delay)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                except (RedisConnectionError, OSError):
                    pass

    def _dispatch(self, data: bytes) -> None:
        try:
            result = decode_result(data)
        except SchemaError as exc:
            logger.error("unreadable result on %s: %s", self.channel, exc)
            return
        session = self.sessions.get(result.session)
        if session is None:
            logger.debug("result %s for a session no longer here", result.id)
            return
        try:
            session.on_result(result)
        except Exception as exc:
            # One session's bug (or a result it cannot take) ends that session, never the router.
            logger.exception("session %s: result %s could not be handled; abandoning it", session.id, result.id)
            self.remove(session)
            session.abandon("a result could not be handled: %s" % type(exc).__name__)
