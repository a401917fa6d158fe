"""What a wire protocol adapter is, and what it may ask of its connection.

An adapter turns its protocol's client messages into calls on the connection (`Host`): open the
session(s) with their options, audio, finalize, drain; and the session's events into its
protocol's messages. Everything else is the connection's (gateway/transport/) and the same for every
protocol: auth, admission, the outbox and its ordering, limits and their close codes, timeouts,
metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from starlette.datastructures import QueryParams

from common.settings import GatewaySettings
from gateway.core.events import Event
from gateway.core.options import EotRule, SessionOptions, Turn


class SessionView(Protocol):
    """A session, as an adapter sees it (its options it may change in place)."""

    @property
    def id(self) -> str: ...

    @property
    def options(self) -> SessionOptions: ...

    @property
    def resume_token(self) -> str:
        """A resumable session's (sent once, at its start)."""
        ...

    @property
    def audio_s(self) -> float:
        """Seconds of the client's audio the session holds (its clock)."""
        ...

    @property
    def next_utt(self) -> int: ...

    @property
    def speaking(self) -> bool:
        """Whether an utterance is open."""
        ...

    def set_rate(self, rate: int) -> None: ...

    def set_turn(self, turn: Turn | None, eot: EotRule | None = None) -> None: ...

    def set_language(self, lang: str | None) -> None: ...

    async def discard(self) -> None:
        """Forget the utterance being spoken (the client cleared its input)."""
        ...


class Host(Protocol):
    """The connection, as its adapter sees it."""

    settings: GatewaySettings

    @property
    def sessions(self) -> Sequence[SessionView]:
        """One per channel, once opened."""
        ...

    headers: Mapping[str, str]  # of the upgrade request
    query: QueryParams  # of the upgrade request (a key may repeat)

    @property
    def model_name(self) -> str:
        """The model the live decoders serve."""
        ...

    @property
    def english_only(self) -> bool: ...

    @property
    def turn_model(self) -> bool:
        """Whether the end-of-turn model is served (a live decoder answers its questions)."""
        ...

    def send(self, msg: dict[str, Any], error: str = "") -> None:
        """Queue a message (in order); `error`: it reports an error of that code (counted)."""
        ...

    def close(self, code: int, reason: str = "") -> None:
        """Close with `code` once what is queued before it is sent."""
        ...

    async def open(self, options: SessionOptions, channels: int = 1, resumable: bool = False) -> Sequence[SessionView]:
        """Start the session (one per channel, each with `options`); `resumable`: kept in Redis
        as it goes, so that its client can resume it on any gateway (its `resume_token`)."""
        ...

    async def resume(
        self, session_id: str, token: str, last_seq: int, announce: Callable[[SessionView], None]
    ) -> SessionView | None:
        """Take a session over from the connection (and gateway) it had; ResumeRefused when it
        cannot be; None when it had ended (what the client missed of its end is sent).
        `announce(session)` is called once what the client missed is queued, before the session
        takes a step here: the adapter says it resumed before any new message of the session."""
        ...

    def finish(self) -> None:
        """The session ended and its client was told: nothing is kept for a resume."""
        ...

    async def audio(self, pcm: list[bytes]) -> bool:
        """PCM16 at the sessions' rate, one buffer per channel (of equal length). False: the
        client was refused for sending too fast (its error and close are queued)."""
        ...

    async def finalize(self) -> int | None:
        """End every session's utterance now: how many ended; None: refused (too many finalize)."""
        ...

    async def drain(self) -> None:
        """Finalize, then wait until every final owed is sent (or its error)."""
        ...

    async def linger_for_close(self) -> None:
        """After the last message: let the client close first, for a while."""
        ...


class Adapter(Protocol):
    """One wire protocol on one connection."""

    name: str
    # A session starts with a client message (native `start`): until then START_TIMEOUT_S runs.
    # Otherwise the adapter opens it in `on_open`.
    start_required: bool

    def idle_timeout_s(self) -> float:
        """Close after this long without a message from the client."""
        ...

    def stamp(self, msg: dict[str, Any], n: int) -> None:
        """Mark the n-th message sent on the connection (the native `seq`, OpenAI's `event_id`)."""
        ...

    def error(self, code: str, message: str) -> dict[str, Any]:
        """The protocol's error message."""
        ...

    async def on_open(self) -> None:
        """The connection was accepted and admitted."""
        ...

    async def on_text(self, text: str) -> bool:
        """A text message; False: the connection is done (its close is queued). BadInput raised
        is answered by the connection (and closes it with 4400 when fatal)."""
        ...

    async def on_binary(self, data: bytes) -> bool:
        """A binary message (audio, in most protocols); as `on_text`."""
        ...

    def on_event(self, channel: int, event: Event) -> None:
        """What a session says, rendered for the client."""
        ...

    async def on_timeout(self, code: str, message: str) -> None:
        """The session ran out of time (idle, or MAX_SESSION_S): tell the client, hand over
        what is owed, close."""
        ...
