"""gateway/transport/router.py: the result subscription notices a Redis that went silent (its host lost,
no connection reset) and is made again, with every receiver's pending work re-queued."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

from common.lifecycle import StopFlag
from common.messages import Result
from common.redis_server import RedisServer
from common.redisconn import aclose, async_client
from gateway.transport.router import SILENCE_S, ResultRouter
from tests.conftest import async_wait_for


class Receiver:
    id = "s1"

    def __init__(self) -> None:
        self.requeued = 0

    def on_result(self, result: Result) -> None:
        pass

    async def requeue_pending(self) -> None:
        self.requeued += 1

    def abandon(self, why: str) -> None:
        pass


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as s:
        yield s


async def test_a_silent_redis_is_given_up_and_the_subscription_made_again(server: RedisServer) -> None:
    redis = async_client(server.url, socket_connect_timeout=2.0, socket_timeout=5.0)
    router = ResultRouter(redis, "gw-1")
    receiver = Receiver()
    router.sessions[receiver.id] = receiver  # type: ignore[assignment]
    stop = StopFlag()
    task = asyncio.create_task(router.run(stop))
    try:
        await asyncio.wait_for(router.subscribed.wait(), 10)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)  # the connection stays open; nothing answers
        try:
            await async_wait_for(lambda: not router.subscribed.is_set(), SILENCE_S + 5, "the silence noticed")
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        await async_wait_for(lambda: receiver.requeued == 1, 30, "the resubscription and the re-queue")
        assert router.subscribed.is_set()
    finally:
        stop.request()
        await asyncio.wait_for(task, 10)
        await aclose(redis)
