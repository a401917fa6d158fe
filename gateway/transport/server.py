"""The gateway's HTTP/WebSocket server: uvicorn with the settings this service needs.

Its WebSocket protocol is uvicorn's sans-I/O one with one addition: when the app is done with a
connection whose client stopped reading, the socket may still hold unsent bytes (asyncio would
keep it open until they drain) or wait for a close answer that never comes (until the ping
timeout, 40 s, while the client may go on sending). Such a socket is aborted after a short
grace period, so a never-reading client cannot pin a socket and its buffers.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from common.settings import GatewaySettings

logger = logging.getLogger(__name__)

ABORT_AFTER_S = 5.0  # how long a finished connection may take to flush before it is dropped


class WebSocketProtocol(WebSocketsSansIOProtocol):
    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            # A refusal (401) is a complete answer to the handshake, not an app that failed it.
            self.handshake_complete = True

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if not self.disconnected:
            self.loop.call_later(ABORT_AFTER_S, self._abort_if_stuck)

    def _abort_if_stuck(self) -> None:
        # A client that reads has answered the close (and the socket is gone) long before this.
        if not self.disconnected:
            logger.info(
                "dropping a connection whose client does not answer its close (%d bytes unsent)",
                self.transport.get_write_buffer_size(),
            )
            self.transport.abort()


def server_config(settings: GatewaySettings, on_fatal: Callable[[str], None] | None = None) -> uvicorn.Config:
    """The uvicorn configuration of a gateway."""
    from gateway.transport.app import create_app

    return uvicorn.Config(
        create_app(settings, on_fatal),
        host=settings.HOST,
        port=settings.PORT,
        ws=WebSocketProtocol,
        # Frames up to twice the limit reach the app, which answers them with a clear error
        # and 1009; anything larger is refused by the server itself.
        ws_max_size=settings.MAX_FRAME_BYTES * 2,
        # Compression would let a client that never reads make the gateway hold ~1000x what it
        # sent (deflated errors and results queue up uncompressed); audio does not compress anyway.
        ws_per_message_deflate=False,
        # A hard cap beside MAX_SESSIONS: connections past it are refused by uvicorn itself (503).
        limit_concurrency=settings.MAX_SESSIONS + 64,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.SHUTDOWN_TIMEOUT_S) or None,
        lifespan="on",
    )


class GatewayServer(uvicorn.Server):
    """A gateway's server (what `stt gateway` runs, and in-process tests too).

    SIGTERM and SIGINT stop it gracefully, and that is a normal exit: uvicorn would re-raise the
    signal after its shutdown, so the process died of it (-15) or printed a KeyboardInterrupt
    traceback. A long-lived task of the app that dies stops it with `failed` set."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.failed: str | None = None
        super().__init__(server_config(settings, self.fail))

    def fail(self, reason: str) -> None:
        self.failed = reason
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Before uvicorn waits for the requests in flight: a file upload learns that it has
        # SHUTDOWN_TIMEOUT_S to finish or must answer 503 (gateway/files/http.py).
        state = getattr(getattr(self.config.app, "state", None), "gw", None)
        if state is not None:
            state.draining.request()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
