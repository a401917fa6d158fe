"""`stt gateway`: serve the WebSocket protocol with uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import socket

from common.errors import ExitCode
from common.logs import setup_logging
from common.settings import GatewaySettings
from gateway.transport.keyfile import KeyFileError
from gateway.transport.keyring import KeyRing
from gateway.transport.server import GatewayServer

logger = logging.getLogger(__name__)


def run(settings: GatewaySettings) -> int:
    setup_logging(settings.LOG_LEVEL, process_name="gateway")
    if settings.API_KEYS_FILE:
        try:
            KeyRing(settings.API_KEY, settings.API_KEYS_FILE)  # a bad file stops the start here
        except KeyFileError as exc:
            logger.error("%s", exc)
            return ExitCode.CONFIG
    logger.info("gateway %s on http://%s:%d (ws: /v1/listen, /ws)", settings.gateway_id, settings.HOST, settings.PORT)
    server = GatewayServer(settings)
    try:
        server.run(sockets=[shared_socket(settings)] if settings.GATEWAYS > 1 else None)
    except Exception:
        logger.exception("gateway crashed")
        return ExitCode.SOFTWARE
    if server.failed:
        logger.error("gateway %s exits: %s", settings.gateway_id, server.failed)
        return ExitCode.SOFTWARE
    return ExitCode.OK


def shared_socket(settings: GatewaySettings) -> socket.socket:
    """The listening socket of one of several gateways on one port (stt up's GATEWAYS): with
    SO_REUSEPORT each has its own, the kernel spreads new connections over them, and when one
    dies its clients reconnect (and resume) to another on the same address."""
    family = socket.AF_INET6 if ":" in settings.HOST else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.HOST, settings.PORT))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
