"""Speculative finals: the would-be final of an utterance whose speaker has paused, decoded while
the endpointer waits to be sure the utterance is over.

When the trailing silence reaches SPECULATE_MS the session queues a speculative job for the
audio so far: exactly what the final will decode if no speech follows (the final then keeps
that much trailing silence), with the same context, prompt and options. Then:

- the endpoint is confirmed with no new speech: the final job is built as always; if it asks
  for the same decode (same audio, context, prompt; it differs when, say, the previous
  utterance's final arrived meanwhile and is now its context) it takes the speculative job's
  id. A result already in is the final, delivered at once; otherwise the final is queued under
  that id, and whichever comes first answers it: the speculative result, or the decoder that
  reads the final (its gate answers from the cache, or waits for the decoder decoding the
  speculative job; decoder/gate.py);
- speech comes back first: the speculative job is cancelled (a decoder that has not started it
  drops it undecoded) and a result that comes anyway is discarded;
- the endpoint ends otherwise (`finalize`, a forced cut): it is cancelled the same way.

Every guarantee of a final holds: it is one decode of the utterance's audio, one per utterance,
in order. What speculation costs is decoder time spent on results that are discarded (counted
in `stt_speculative_wasted_seconds`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from dataclasses import dataclass

from common.messages import Job, Result
from gateway.core.effects import Cancel, Effect, Enqueue
from gateway.metrics import GatewayMetrics

logger = logging.getLogger(__name__)

# The fields that make two final-profile jobs the same decode.
_NOT_THE_DECODE = frozenset({"id", "kind", "enqueued", "deadline"})


def same_decode(a: Job, b: Job) -> bool:
    """Whether two final-profile jobs decode the same thing the same way."""
    return all(
        getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(Job) if f.name not in _NOT_THE_DECODE
    )


@dataclass
class Guess:
    """A speculative job in flight for the open utterance, and its result once in."""

    job: Job
    result: Result | None = None
    eager: bool = False  # told as an eager end of turn: the final must be this result


class Speculation:
    """A session's speculative final (at most one: its open utterance's)."""

    def __init__(self, session_id: str, metrics: GatewayMetrics) -> None:
        self.session_id = session_id
        self.metrics = metrics
        self.guess: Guess | None = None
        self._used: collections.deque[str] = collections.deque(maxlen=32)

    def begin(self, job: Job) -> list[Effect]:
        effects = self.drop("a newer pause")
        self.guess = Guess(job)
        self.metrics.speculative.labels("queued").inc()
        logger.debug("session %s utt %d: speculative final %s queued", self.session_id, job.utt, job.id)
        return [*effects, Enqueue(job)]

    def drop(self, why: str) -> list[Effect]:
        """Cancel the speculative job in flight, if any."""
        guess, self.guess = self.guess, None
        if guess is None:
            return []
        self.metrics.speculative.labels("cancelled").inc()
        if guess.result is not None:
            self._wasted(guess.result)
        logger.debug("session %s utt %d: speculative final cancelled (%s)", self.session_id, guess.job.utt, why)
        return [Cancel(guess.job.id)]

    def settle(self, final: Job) -> tuple[Result | None, list[Effect]]:
        """The endpoint confirmed `final`'s utterance. When the speculative job in flight is the
        same decode, `final` takes its id and its result (if in) is returned: the final to
        deliver now. Otherwise the speculative job is cancelled."""
        guess = self.guess
        if guess is None or guess.job.utt != final.utt:
            return None, self.drop("the utterance ended otherwise")
        if not same_decode(guess.job, final) and not guess.eager:
            self.metrics.speculative.labels("invalid").inc()
            return None, self.drop("the final's context or audio changed")
        self.guess = None
        final.id = guess.job.id
        if guess.result is not None:
            self.metrics.speculative.labels("ready").inc()
            return self.used(guess.result), []
        return None, []

    def used(self, result: Result) -> Result:
        """`result` (a speculative job's) answers its utterance's final."""
        self._used.append(result.id)
        self.metrics.decoded_seconds.labels(result.kind).inc(result.decode_ms / 1000.0)
        return result

    def guess_end(self) -> int:
        """Samples of its utterance the speculative job in flight decodes (0: none)."""
        return self.guess.job.audio_end // 2 if self.guess is not None else 0

    def holds(self, result: Result) -> bool:
        """Whether `result` is the open utterance's speculative result, kept for its endpoint."""
        return self.guess is not None and self.guess.result is result

    def on_result(self, result: Result, pending_id: str | None) -> Result | None:
        """A speculative job's result came: the final it answers (its utterance's pending final
        was queued under its id), or None (kept for the endpoint, or discarded)."""
        if result.id in self._used:
            return None  # a second copy: the result cache answering the final's own job
        if pending_id == result.id:
            if result.error:
                return None  # the final's own job decodes it
            self.metrics.speculative.labels("awaited").inc()
            return self.used(result)
        guess = self.guess
        if guess is not None and guess.job.id == result.id:
            if not result.error:
                guess.result = result
            return None
        self._wasted(result)
        return None

    def _wasted(self, result: Result) -> None:
        self.metrics.speculative.labels("discarded").inc()
        self.metrics.speculative_wasted.inc(result.decode_ms / 1000.0)
        self.metrics.decoded_seconds.labels(result.kind).inc(result.decode_ms / 1000.0)
