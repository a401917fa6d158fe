"""A session's interims: when to ask for one, and which results to show.

One interim at a time per session (a slot): the next is queued once the last is answered or
past its deadline, and only after INTERIM_MIN_MS of new *speech* (not new audio: in the
trailing silence before an end of speech an interim would tell the client nothing new and
keep the decoder busy just as the final comes). A result is shown when it is the open
utterance's newest, not empty, and keeps the stable prefix; the same text twice makes it
stable (gateway/core/stable.py).
"""

from __future__ import annotations

from collections.abc import Callable

from common.clock import Clock
from common.messages import Job, JobKind, Result
from gateway.core.effects import Effect, Emit, Enqueue
from gateway.core.endpoint import Endpointer
from gateway.core.events import Interim
from gateway.core.frames import FRAME_MS
from gateway.core.stable import interim_text, stable_prefix
from gateway.core.state import Utterance
from gateway.metrics import GatewayMetrics

LATE_MS = 250  # the slot is freed this long after an unanswered interim's deadline


class Interims:
    def __init__(
        self,
        min_ms: int,
        deadline_ms: int,
        endpointer: Endpointer,
        make_job: Callable[..., Job],
        metrics: GatewayMetrics,
        clock: Clock,
    ) -> None:
        self.min_ms = min_ms
        self.deadline_ms = deadline_ms
        self.endpointer = endpointer
        self.make_job = make_job
        self.metrics = metrics
        self.clock = clock
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
        if self.in_flight and self.clock.wall_ms() > self.in_flight[2] + LATE_MS:
            self.in_flight = None
            self.metrics.interims_dropped.labels("timeout").inc()
            return True
        return False

    def maybe_ask(self, utt: Utterance | None) -> list[Effect]:
        if utt is None or self.in_flight is not None:
            return []
        voiced = self.endpointer.speech_frames
        new_ms = (voiced - utt.voiced_from) * FRAME_MS
        if new_ms < self.min_ms:
            if utt.interim_from and utt.appended > utt.interim_from:
                self.metrics.interims_coalesced.inc()
            return []
        utt.voiced_from = voiced
        utt.rev += 1
        deadline = self.clock.wall_ms() + self.deadline_ms
        job = self.make_job(JobKind.INTERIM, utt, utt.appended, rev=utt.rev, prefix=utt.stable, deadline=deadline)
        utt.interim_from = utt.appended
        self.in_flight = (utt.n, utt.rev, deadline)
        self.queued_at = self.clock.now()
        return [Enqueue(job)]

    def on_result(self, result: Result, utt: Utterance | None) -> list[Emit]:
        """The interim to show for `result`, if it is worth it."""
        if self.in_flight and self.in_flight[:2] == (result.utt, result.rev):
            self.in_flight = None
        if utt is None or utt.n != result.utt or result.rev <= utt.delivered_rev or result.error:
            self.metrics.interims_dropped.labels("stale").inc()
            return []
        text = interim_text(result.text)
        if not text:
            self.metrics.interims_dropped.labels("empty").inc()
            return []
        if not text.startswith(utt.stable):
            self.metrics.interims_dropped.labels("unstable").inc()
            return []
        was_stable = utt.stable
        unchanged = bool(utt.texts) and text == utt.texts[-1]
        utt.delivered_rev = result.rev
        utt.texts = [*utt.texts[-1:], text]
        utt.stable = stable_prefix(utt.texts, utt.stable)
        # The raw text: whether the model heard a sentence end is what the endpointer asks.
        self.endpointer.heard(result.text, utt.start_sample + round(result.audio_s * 16000))
        if unchanged and utt.stable == was_stable:
            self.metrics.interims_dropped.labels("unchanged").inc()
            return []
        self.metrics.interim_latency.observe(self.clock.now() - self.queued_at)
        end = utt.start + result.audio_s
        return [Emit(Interim(utt.n, result.rev, text, utt.stable, utt.start, end, result.confidence))]
