"""Resumable sessions on a connection: a new one recorded from its start, and one taken over from
the gateway (and connection) it had (docs/clients/resuming.md)."""

from __future__ import annotations

import logging
import time
from typing import cast

import redis.asyncio as aioredis

from common import keys
from common.settings import GatewaySettings
from gateway.core import restore
from gateway.core.effects import Effect
from gateway.core.session import Session
from gateway.core.state import Snapshot, dump_options
from gateway.metrics import GatewayMetrics
from gateway.store import journal
from gateway.store.jobqueue import WriteBatcher
from gateway.transport.connection import Connection

logger = logging.getLogger(__name__)


async def make_resumable(session: Session, conn: Connection, writes: WriteBatcher, gateway_id: str, ttl_s: int) -> str:
    """Record the new session for a resume, log its connection's messages from now on, and
    return its resume token (never recorded or logged as such: only its hash is kept)."""
    token = journal.new_token()
    session.resumable = True
    fields = {"options": dump_options(session.options), **session.snapshot()}
    conn.attach_journal(await journal.create(writes, session.id, token, gateway_id, fields, ttl_s))
    return token


async def take_over(
    conn: Connection,
    redis: aioredis.Redis,
    writes: WriteBatcher,
    settings: GatewaySettings,
    gateway_id: str,
    metrics: GatewayMetrics,
    session_id: str,
    token: str,
    last_seq: int,
) -> tuple[Session | None, list[Effect]]:
    """Take the session over on `conn` and queue the messages it missed: the session (None when
    it had already ended) and what to do first. ResumeRefused: refused, nothing was changed."""
    ttl_s = int(settings.RESUME_TTL_S)
    taken = await journal.take_over(writes, session_id, token, gateway_id, ttl_s)
    missed = restore.replay_of(taken.log, last_seq)
    next_seq = max([int(taken.state.get("seq", -1)), *(m.get("seq", -1) for m in taken.log)]) + 1
    conn.attach_journal(taken.journal)
    snap = Snapshot.parse(session_id, taken.state, time.monotonic())
    if snap.finished:
        conn.replay(missed, next_seq)
        return None, []
    recent = b""
    where = snap.recent_range()
    if where is not None and where[2] > where[1]:
        n, first, end = where
        recent = cast(bytes, await redis.getrange(keys.audio_key(session_id, n), first, end - 1))
    session, effects = restore.restore(settings, gateway_id, metrics, snap, taken.log, recent)
    conn.replay(missed, next_seq)
    return session, effects
