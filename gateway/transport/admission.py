"""Whether the cluster can take a new connection now: a connection refused at once (1013) is
better than one accepted and starved."""

from __future__ import annotations

from redis.exceptions import RedisError

from gateway.transport.process import GatewayState


async def refusal(state: GatewayState) -> str:
    """Why a new connection is refused ("" when it is not)."""
    settings = state.settings
    if state.connections > settings.MAX_SESSIONS:
        return "this gateway has %d connections, its limit" % settings.MAX_SESSIONS
    if not state.decoders:
        return "no decoder is running"
    try:
        if await state.queue.final_backlog() >= settings.MAX_FINAL_BACKLOG:
            return "the decoders are %d finals behind" % settings.MAX_FINAL_BACKLOG
    except (RedisError, OSError):
        return "the service cannot reach its queue"
    return ""
