"""A TCP proxy standing in for a load balancer in front of several gateways: each new connection
goes to the first backend that accepts it (a dead gateway refuses, the next one is tried)."""

from __future__ import annotations

import asyncio
import contextlib

from common.redis_server import free_port


class Proxy:
    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()
        self.routed: list[int] = []  # the backend port of each connection, in order

    @property
    def url(self) -> str:
        return "ws://127.0.0.1:%d/v1/listen" % self.port

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.pipes):
            task.cancel()
        for task in list(self.pipes):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in self.backends:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.routed.append(port)
            for a, b in ((reader, up_writer), (up_reader, writer)):
                task = asyncio.create_task(self._pipe(a, b))
                self.pipes.add(task)
                task.add_done_callback(self.pipes.discard)
            return
        writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
