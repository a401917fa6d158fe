"""`stt gateway`: serve the WebSocket protocol with uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import logging

import uvicorn

from common.errors import ExitCode
from common.logs import setup_logging
from common.settings import Settings
from gateway.server import server_config

logger = logging.getLogger(__name__)


def run(settings: Settings) -> int:
    setup_logging(settings.LOG_LEVEL, process_name="gateway")
    logger.info("gateway %s on http://%s:%d (ws: /v1/listen, /ws)", settings.gateway_id, settings.HOST, settings.PORT)
    try:
        uvicorn.Server(server_config(settings)).run()
    except Exception:
        logger.exception("gateway crashed")
        return ExitCode.SOFTWARE
    return ExitCode.OK
