"""The decode jobs a session queues: which audio, what context and prompt, which options."""

from __future__ import annotations

from typing import Any, Protocol

from common import keys
from common.messages import Job, JobKind
from common.settings import GatewaySettings
from gateway.core.frames import RATE
from gateway.core.options import SessionOptions
from gateway.core.state import Heard, Utterance

PROMPT_CHARS = 400
# Context and utterance together stay inside Whisper's 30 s window, with room to spare.
WINDOW_S = 28.0
BYTES_PER_S = RATE * 2


def final_prompt(user_prompt: str, recent_text: str) -> str:
    """The decoder's prompt: the client's prompt and the session's recent finals, the most recent kept."""
    return (user_prompt + " " + recent_text).strip()[-PROMPT_CHARS:]


class Source(Protocol):
    """What a job is made from: the session it is for."""

    id: str
    gateway_id: str
    settings: GatewaySettings
    options: SessionOptions
    lang: str | None
    recent_text: str
    heard: Heard | None


def job_id(session: str, kind: JobKind, utt: int, audio_end: int, rev: int) -> str:
    if kind == JobKind.FINAL:
        return keys.final_job_id(session, utt)
    if kind == JobKind.SPECULATIVE:
        return keys.speculative_job_id(session, utt, audio_end)
    if kind == JobKind.TURN:
        return keys.turn_job_id(session, utt, audio_end)
    return keys.interim_job_id(session, utt, rev)


def job_for(session: Source, kind: JobKind, utt: Utterance, audio_end: int, **extra: Any) -> Job:
    """A job for `utt`'s audio up to `audio_end`. A final is decoded after the previous
    utterance's audio with its text forced (acoustic context) when that final was delivered
    first, is at most CONTEXT_S (EOT_MODEL_CONTEXT_S in a session whose turns end by the
    end-of-turn model, EOT_CONTEXT_S in one without interims) and both fit the window; the
    prompt is then what came before it."""
    recent = session.recent_text
    as_final = kind.decodes_as_final
    heard = session.heard if as_final else None
    context_s = session.settings.CONTEXT_S
    # The turn's end waits for its final's words (the end-of-turn model weighs them; without
    # interims the silence rule has no others): a short context keeps that decode short.
    if session.options.eot is not None:
        context_s = min(context_s, session.settings.EOT_MODEL_CONTEXT_S)
    elif not session.options.interim:
        context_s = min(context_s, session.settings.EOT_CONTEXT_S)
    if heard is not None and (
        heard.utt != utt.n - 1
        or heard.audio_end > context_s * BYTES_PER_S
        or heard.audio_end + audio_end > WINDOW_S * BYTES_PER_S
    ):
        heard = None
    if heard is not None:
        extra.update(
            context_key=keys.audio_key(session.id, heard.utt), context_end=heard.audio_end, context_text=heard.text
        )
        # The context's text is forced after the prompt, so the prompt is what came before it.
        recent = recent[: len(recent) - len(heard.text)].rstrip() if recent.endswith(heard.text) else ""
    options = session.options
    return Job(
        id=job_id(session.id, kind, utt.n, audio_end, extra.get("rev", 0)),
        kind=kind,
        session=session.id,
        gateway=session.gateway_id,
        utt=utt.n,
        audio_key=keys.audio_key(session.id, utt.n),
        audio_end=audio_end,
        t0=utt.start,
        lang=session.lang,
        task=options.task,
        word_timestamps=options.word_timestamps and as_final,
        prompt=final_prompt(options.prompt, recent),
        hotwords=", ".join(options.hotwords) if as_final else "",
        speakers=options.diarize and as_final,
        **extra,
    )
