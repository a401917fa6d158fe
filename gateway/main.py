"""`stt gateway`: serve the WebSocket protocol with uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import logging

from common.errors import ExitCode
from common.logs import setup_logging
from common.settings import Settings
from gateway.server import GatewayServer

logger = logging.getLogger(__name__)


def run(settings: Settings) -> int:
    setup_logging(settings.LOG_LEVEL, process_name="gateway")
    logger.info("gateway %s on http://%s:%d (ws: /v1/listen, /ws)", settings.gateway_id, settings.HOST, settings.PORT)
    server = GatewayServer(settings)
    try:
        server.run()
    except Exception:
        logger.exception("gateway crashed")
        return ExitCode.SOFTWARE
    if server.failed:
        logger.error("gateway %s exits: %s", settings.gateway_id, server.failed)
        return ExitCode.SOFTWARE
    return ExitCode.OK
