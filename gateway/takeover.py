"""A session taken over by this gateway: rebuilt from what the gateway before it recorded
(gateway/resume.py, gateway/sessionstate.py), so that it goes on where it was.

Its utterance numbering, context, recent text and pending finals come from its state; what the
client was told comes from the log, which wins where the two disagree (a final sent after the
last state write was delivered; the open utterance's stable prefix is what its last interim
announced). Pending finals are queued again for this gateway (their job ids unchanged: the
decoders' result cache answers those already decoded). An open utterance goes on in the
endpointer from the end of its audio key.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis

from common import keys
from gateway import resume
from gateway.connection import Connection
from gateway.resume import Resumed, ResumeRefused
from gateway.session import Session
from gateway.sessionstate import Core, Heard, dump_options, dump_pending, load_options, load_pending, pending_field
from gateway.vad import FRAME_BYTES, RATE

logger = logging.getLogger(__name__)


def replay_of(log: list[dict[str, Any]], last_seq: int) -> list[dict[str, Any]]:
    """The logged messages the client did not get (after `last_seq`), in order; ResumeRefused
    when some of them were already dropped from the capped log."""
    missed = [m for m in log if m.get("seq", -1) > last_seq]
    if log and last_seq + 1 < log[0].get("seq", 0):
        raise ResumeRefused(
            "resume_gap", "messages %d-%d are no longer kept; start a new session" % (last_seq + 1, log[0]["seq"] - 1)
        )
    return missed


async def restore(session: Session, resumed: Resumed, redis: aioredis.Redis) -> None:
    """Make `session` (new, with the right options) the session `resumed` describes."""
    state, log = resumed.state, resumed.log
    core = Core.loads(state["core"]) if state.get("core") else Core()
    told = {m["utterance"]: m for m in log if m.get("type") in ("final", "error") and "utterance" in m}
    now = time.monotonic()
    pending = {
        int(name.split(":", 1)[1]): load_pending(value, now)
        for name, value in state.items()
        if name.startswith("pending:")
    }
    session.id = resumed.journal.session
    session.journal = resumed.journal
    session.lang = core.lang
    session.audio_dropped = core.audio_dropped
    session.recent_text, session.heard = core.recent_text, core.heard
    next_final = core.next_final
    while next_final in told:
        # Delivered after the state last said: its text is the context the next final needs.
        msg = told[next_final]
        if msg.get("type") == "final" and msg.get("text"):
            session.recent_text = (session.recent_text + " " + msg["text"]).strip()[-400:]
            p = pending.get(next_final)
            session.heard = Heard(next_final, p.job.audio_end, msg["text"]) if p is not None else None
        next_final += 1
    session.next_final = next_final
    for n in sorted(pending):
        if n < next_final:
            session.resolved.append(n)
            continue
        p = pending[n]
        p.job.gateway = session.gateway_id
        session.pending[n] = p
    current = core.current
    if current is not None and (current.n < next_final or current.n in pending):
        current = None  # it ended after the state last said
    numbers = [core.next_utt, *(n + 1 for n in pending), *(n + 1 for n in told)]
    session.next_utt = max(numbers)
    if current is not None:
        current.appended = int(await redis.strlen(keys.audio_key(session.id, current.n)))
        current.appended -= current.appended % 2
        last = next((m for m in reversed(log) if m.get("type") == "interim" and m.get("utterance") == current.n), None)
        if last is not None:
            current.rev = current.delivered_rev = last["rev"]
            current.texts = [last["text"]]
            current.stable = last["text"][: last["stable_chars"]]
        current.interim_from = current.appended
        session.current = current
        session.next_utt = max(session.next_utt, current.n + 1)
        start = round(current.start * RATE)
        session.endpointer.resume(start + current.appended // 2, start, current.appended // FRAME_BYTES)
    else:
        session.endpointer.resume(int(state.get("pos") or 0))
    session.samples_in = session.endpointer.samples
    if session.pending:
        session.finals_done.clear()
    if len(session.pending) >= session.settings.MAX_PENDING_FINALS:
        session.room.clear()
    await session.record(**{pending_field(n): dump_pending(p) for n, p in session.pending.items()})
    for p in session.pending.values():
        # Results for the old owner's channel are lost with it: asked for again, here.
        await session.queue.enqueue(p.job)
    logger.info(
        "session %s taken over: utterance %d next, %d finals pending, %s",
        session.id,
        session.next_utt,
        len(session.pending),
        "utterance %d open" % current.n if current else "between utterances",
    )


async def make_resumable(session: Session, conn: Connection, writes: Any, gateway_id: str, ttl_s: int) -> str:
    """Record the new session for a resume and return its resume token (never recorded or logged
    as such: only its hash is kept)."""
    token = resume.new_token()
    fields = {"options": dump_options(session.options), "core": session.core().dumps(), "pos": "0"}
    session.journal = await resume.create(writes, session.id, token, gateway_id, fields, ttl_s)
    conn.journal = session.journal
    conn.unrecorded = {"resume_token"}
    return token


async def resume_on(
    conn: Connection,
    make: Any,
    redis: aioredis.Redis,
    writes: Any,
    session_id: str,
    token: str,
    last_seq: int,
    gateway_id: str,
    ttl_s: int,
) -> tuple[Session | None, int]:
    """Take the session over on `conn` and queue the messages it missed. (the session, or None
    when it had already ended; the seq its next message gets). ResumeRefused: the resume is
    refused, nothing was changed."""
    taken = await resume.take_over(writes, session_id, token, gateway_id, ttl_s)
    missed = replay_of(taken.log, last_seq)
    seqs = [m.get("seq", -1) for m in taken.log]
    next_seq = max([int(taken.state.get("seq", -1)), *seqs]) + 1
    conn.journal = taken.journal
    conn.unrecorded = {"resume_token"}
    if taken.state.get("finished") == "1":
        conn.replay(missed, next_seq)
        return None, next_seq
    session: Session = make(load_options(taken.state["options"]))
    await restore(session, taken, redis)
    conn.replay(missed, next_seq)
    return session, next_seq
