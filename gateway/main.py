"""`stt gateway`: serve the WebSocket protocol with uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import logging

import uvicorn

from common.errors import ExitCode
from common.logs import setup_logging
from common.settings import Settings

logger = logging.getLogger(__name__)


def server_config(settings: Settings) -> uvicorn.Config:
    """The uvicorn server of a gateway (what `stt gateway` runs, and in-process tests too)."""
    from gateway.app import create_app

    return uvicorn.Config(
        create_app(settings),
        host=settings.HOST,
        port=settings.PORT,
        ws="websockets-sansio",
        # Frames up to twice the limit reach the app, which answers them with a clear error
        # and 1009; anything larger is refused by the server itself.
        ws_max_size=settings.MAX_FRAME_BYTES * 2,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.SHUTDOWN_TIMEOUT_S) or None,
        lifespan="on",
    )


def run(settings: Settings) -> int:
    setup_logging(settings.LOG_LEVEL, process_name="gateway")
    logger.info("gateway %s on http://%s:%d (ws: /v1/listen, /ws)", settings.gateway_id, settings.HOST, settings.PORT)
    try:
        uvicorn.Server(server_config(settings)).run()
    except Exception:
        logger.exception("gateway crashed")
        return ExitCode.SOFTWARE
    return ExitCode.OK
