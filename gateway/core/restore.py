"""A session taken over by this gateway, rebuilt from what the gateway before it recorded
(gateway/core/state.py) so that it goes on exactly where it was.

Its utterance numbering, context, recent text, pending finals and the endpointer's state come
from its record; what the client was told comes from the log, which wins where the two disagree
(a final sent after the last record was delivered; the open utterance's stable prefix is what
its last interim announced). The client sends its audio again from the recorded position, and
the endpointer, restored there, judges it as the old one would have. Pending finals are queued
again for this gateway (their job ids unchanged: the decoders' result cache answers those
already decoded).
"""

from __future__ import annotations

import logging
from typing import Any

from common.clock import SYSTEM, Clock
from common.settings import GatewaySettings
from gateway.core.effects import Effect, Record
from gateway.core.frames import RATE
from gateway.core.jobs import PROMPT_CHARS
from gateway.core.session import Session
from gateway.core.speakers import Speakers
from gateway.core.state import Heard, Snapshot, dump_pending, pending_field
from gateway.errors import ResumeRefused
from gateway.metrics import GatewayMetrics

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


def restore(
    settings: GatewaySettings,
    gateway_id: str,
    metrics: GatewayMetrics,
    snap: Snapshot,
    log: list[dict[str, Any]],
    recent_audio: bytes = b"",
    clock: Clock = SYSTEM,
) -> tuple[Session, list[Effect]]:
    """The session `snap` describes, on this gateway, and what to do first: record it as this
    gateway's and queue its pending finals again. `recent_audio`: the end of the open
    utterance's audio up to the recorded position (Snapshot.open_audio_range)."""
    session = Session(settings, snap.options, gateway_id, metrics, session_id=snap.session, resumable=True, clock=clock)
    core, pending = snap.core, snap.pending
    told = {m["utterance"]: m for m in log if m.get("type") in ("final", "error") and "utterance" in m}
    session.lang = core.lang
    if session.speakers is not None and snap.speakers:
        # Finals told after this was recorded keep their labels; their voices are not in it.
        session.speakers = Speakers.load(snap.speakers)
    session.audio_dropped = core.audio_dropped
    session.recent_text, session.heard = core.recent_text, core.heard
    next_final = core.next_final
    while next_final in told:
        # Delivered after the state last said: its text is the context the next final needs.
        msg = told[next_final]
        if msg.get("type") == "final" and msg.get("text"):
            session.recent_text = (session.recent_text + " " + msg["text"]).strip()[-PROMPT_CHARS:]
            p = pending.get(next_final)
            session.heard = Heard(next_final, p.job.audio_end, msg["text"]) if p is not None else None
        next_final += 1
    session.next_final = next_final
    for n in sorted(pending):
        if n < next_final:
            session.resolved.append(n)
            continue
        p = pending[n]
        p.job.gateway = gateway_id
        session.pending[n] = p
    current = core.current
    if current is not None and (current.n < next_final or current.n in pending):
        current = None  # it ended after the state last said
    session.next_utt = max([core.next_utt, *(n + 1 for n in pending), *(n + 1 for n in told)])
    if current is not None:
        last = next((m for m in reversed(log) if m.get("type") == "interim" and m.get("utterance") == current.n), None)
        if last is not None and last["rev"] >= current.delivered_rev:
            current.rev = max(current.rev, last["rev"])
            current.delivered_rev = last["rev"]
            current.texts = [last["text"]]
            current.stable = last["text"][: last["stable_chars"]]
        session.current = current
        session.next_utt = max(session.next_utt, current.n + 1)
    if snap.endpoint and (current is not None or not core.current):
        session.endpointer.restore(snap.endpoint, recent_audio)
    else:
        # A fresh endpointer, waiting for speech from the recorded position, or from the end of a
        # final the log holds and the record does not (told after the last record: heard again
        # from before its end, that utterance's tail would come back as a new one).
        told_end = max(
            (int(float(m["end"]) * RATE) for n, m in told.items() if n >= core.next_final and m.get("end") is not None),
            default=0,
        )
        session.endpointer.samples = max(snap.pos, told_end)
    session.samples_in = session.position
    fields = {pending_field(n): dump_pending(p) for n, p in session.pending.items()}
    effects: list[Effect] = [Record({**session.snapshot(), **fields})]
    # Results for the old owner's channel are lost with it: asked for again, here (as many at
    # once as a session may have queued; the others as those are answered).
    effects += session._release()
    logger.info(
        "session %s taken over: utterance %d next, %d finals pending, %s",
        session.id,
        session.next_utt,
        len(session.pending),
        "utterance %d open" % current.n if current else "between utterances",
    )
    return session, effects
