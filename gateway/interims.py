"""A session's interims: when to ask for one, and which results to show.

One interim at a time per session (a slot): the next is queued once the last is answered or
past its deadline, and only after INTERIM_MIN_MS of new *speech* (not new audio: in the
trailing silence before an end of speech an interim would tell the client nothing new and
keep the decoder busy just as the final comes). A result is shown when it is the open
utterance's newest, not empty, and keeps the stable prefix; the same text twice makes it
stable (gateway/stable.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from common.clock import now_ms
from common.messages import Job, JobKind, Result
from common.settings import Settings
from gateway.events import Event, Interim
from gateway.metrics import GatewayMetrics
from gateway.sessionstate import Utterance
from gateway.stable import interim_text, stable_prefix
from gateway.vad import FRAME_MS, Endpointer

LATE_MS = 250  # the slot is freed this long after an unanswered interim's deadline


class Interims:
    def __init__(
        self,
        settings: Settings,
        endpointer: Endpointer,
        make_job: Callable[..., Job],
        enqueue: Callable[[Job], Awaitable[Any]],
        emit: Callable[[Event], None],
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.endpointer = endpointer
        self.make_job = make_job
        self.enqueue = enqueue
        self.emit = emit
        self.metrics = metrics
        self.in_flight: tuple[int, int, int] | None = None  # (utt, rev, deadline ms)
        self.queued_at = 0.0

    def forget(self, utt: int) -> None:
        """`utt` is over (or gone): its interim in flight no longer holds the slot (dropped as
        stale whenever it comes), so the next utterance's first interim does not wait for it."""
        if self.in_flight and self.in_flight[0] == utt:
            self.in_flight = None

    def reset(self) -> None:
        self.in_flight = None

    def expired(self) -> bool:
        """Free the slot of an interim past its deadline; whether it was."""
        if self.in_flight and now_ms() > self.in_flight[2] + LATE_MS:
            self.in_flight = None
            self.metrics.interims_dropped.labels("timeout").inc()
            return True
        return False

    async def maybe_ask(self, utt: Utterance | None) -> None:
        if utt is None or self.in_flight is not None:
            return
        voiced = self.endpointer.speech_frames
        new_ms = (voiced - utt.voiced_from) * FRAME_MS
        if new_ms < self.settings.INTERIM_MIN_MS:
            if utt.interim_from and utt.appended > utt.interim_from:
                self.metrics.interims_coalesced.inc()
            return
        utt.voiced_from = voiced
        utt.rev += 1
        deadline = now_ms() + self.settings.INTERIM_DEADLINE_MS
        job = self.make_job(JobKind.INTERIM, utt, utt.appended, rev=utt.rev, prefix=utt.stable, deadline=deadline)
        utt.interim_from = utt.appended
        self.in_flight = (utt.n, utt.rev, deadline)
        self.queued_at = time.monotonic()
        await self.enqueue(job)

    def on_result(self, result: Result, utt: Utterance | None) -> bool:
        """Show `result` if it is worth it; whether it was shown."""
        if self.in_flight and self.in_flight[:2] == (result.utt, result.rev):
            self.in_flight = None
        if utt is None or utt.n != result.utt or result.rev <= utt.delivered_rev or result.error:
            self.metrics.interims_dropped.labels("stale").inc()
            return False
        text = interim_text(result.text)
        if not text:
            self.metrics.interims_dropped.labels("empty").inc()
            return False
        if not text.startswith(utt.stable):
            self.metrics.interims_dropped.labels("unstable").inc()
            return False
        was_stable = utt.stable
        unchanged = bool(utt.texts) and text == utt.texts[-1]
        utt.delivered_rev = result.rev
        utt.texts = [*utt.texts[-1:], text]
        utt.stable = stable_prefix(utt.texts, utt.stable)
        # The raw text: whether the model heard a sentence end is what the endpointer asks.
        self.endpointer.last_text = result.text
        if unchanged and utt.stable == was_stable:
            self.metrics.interims_dropped.labels("unchanged").inc()
            return False
        self.metrics.interim_latency.observe(time.monotonic() - self.queued_at)
        end = utt.start + result.audio_s
        self.emit(Interim(utt.n, result.rev, text, utt.stable, utt.start, end, result.confidence))
        return True
