"""The endpointer's end-of-turn model mode (gateway/core/endpoint.py): silence cannot tell "I'd
like to order… [pause] a large pizza" from a finished sentence; a model that hears intonation
and syntax can (decoder/turnmodel.py, asked through the decoders: decoder/turns.py).

In a pause, once the silence reaches EOT_PROBE_MS, the endpointer asks (`Probe`); the session
queues the question and hands the answer back (`verdict`). The answer is weighed with the words
heard so far (the latest interim, or the speculative final: `last_text`):

- "done" (at the rule's threshold or above, the answer weighed with the words: `confidence`)
  and the words do not stop mid-phrase: the turn ends now (`decide`, at the session's next step; reason MODEL);
- "not yet" and the words stop mid-phrase (a comma, a conjunction, an article): both say the
  speaker is not done, so the turn waits past the silence rule, the model asked again every
  REPROBE_MS, until the rule's `timeout_ms` of silence ends it regardless;
- otherwise, and until a first answer comes, the service's silence rule decides.

So the model only ever ends a turn sooner when the words do not contradict it, and holds one
longer only when they agree: measured on recorded and espeak-ng sentences (benchmarks/turns.py),
smart-turn alone judged 40-50% of sentences cut after a function word "done" at 0.5. A model
that does not answer (no decoder serves it, or late) costs nothing more than silence alone.
"""

from __future__ import annotations

from gateway.core.events import EndReason
from gateway.core.frames import Event, Probe, State, ends_sentence, mid_phrase
from gateway.core.options import EotRule

REPROBE_MS = 300  # again this often while the answer is "not yet"
# Words that end a sentence at the pause multiply the model's odds of "done" by this. The model
# alone is unsure of many finished sentences (read speech, synthetic voices: 0.03-0.6 on half of
# the complete sentences of benchmarks/turns.py), while Whisper's full stop at a pause is wrong
# mostly after a function word, which `mid_phrase` catches. 6: an answer of 0.28 or more then
# ends the turn at Flux's default threshold 0.7, one of 0.15 or more at 0.5; below, the model
# vetoes the words.
WORDS_END_TURN_ODDS = 6.0


class TurnAsking:
    state: State
    samples: int
    silence_frames: int
    silence_max_ms: int
    last_voiced: int
    paused_at: int | None
    last_text: str
    text_through: int

    def _init_model(self, eot: EotRule | None, probe_ms: int) -> None:
        self.eot = eot
        self.probe_ms = probe_ms  # the first question, this far into a pause
        self.probed_at: int | None = None  # the sample of the latest question in this silence
        self.verdict: float | None = None  # the answer to it
        self.answered = False  # an answer came in this silence
        self.not_yet = False  # the latest answer in this silence was "not yet"

    def _close(self, events: list[Event], at_sample: int, reason: EndReason, cut: int | None = None) -> None:
        raise NotImplementedError

    def threshold_ms(self) -> float:
        raise NotImplementedError

    def _speech_heard(self) -> None:
        """A voiced frame: the pause (and what was asked in it) is over."""
        self.probed_at, self.verdict, self.answered, self.not_yet = None, None, False, False

    def _mid_phrase(self) -> bool:
        return mid_phrase(self.last_text)

    def confidence(self) -> float | None:
        """The model's answer weighed with the words heard up to the pause: words that end a
        sentence there (its speculative final's) multiply its odds of "done" by WORDS_END_TURN_ODDS."""
        if self.verdict is None:
            return None
        if self._fresh() and ends_sentence(self.last_text) and not self._mid_phrase():
            odds = self.verdict / max(1e-9, 1.0 - self.verdict) * WORDS_END_TURN_ODDS
            return odds / (1.0 + odds)
        return self.verdict

    def _says_done(self) -> bool:
        assert self.eot is not None
        confidence = self.confidence()
        return confidence is not None and confidence >= self.eot.threshold

    def _fresh(self) -> bool:
        """Whether the words heard reach the pause (the speculative final's, mostly; an older
        interim's say nothing of how the speech stopped)."""
        return self.text_through >= self.last_voiced

    def _done(self) -> bool:
        """The model says the turn is over, and the words heard up to the pause do not say
        otherwise."""
        return self._says_done() and self._fresh() and not self._mid_phrase()

    def _holding(self) -> bool:
        """The model says "not yet" and the words up to the pause stop mid-phrase."""
        return self.not_yet and self._fresh() and self._mid_phrase()

    def _model_ends(self, silence_ms: float, events: list[Event]) -> bool:
        """One more unvoiced frame in model mode: whether it ends the turn (the model said so,
        or the silence is past its cap)."""
        assert self.eot is not None
        if self._done():
            self._close(events, self.last_voiced, EndReason.MODEL, cut=self.paused_at)
            return True
        if silence_ms >= (self.eot.timeout_ms if self._holding() else self.threshold_ms()):
            # The silence rule's end: the model's too when it said so.
            reason = EndReason.MODEL if self._says_done() else EndReason.SILENCE
            self._close(events, self.last_voiced, reason, cut=self.paused_at)
            return True
        return False

    def _model_probe(self, silence_ms: float, events: list[Event]) -> None:
        """Ask the model, at the pause's first `probe_ms` and every REPROBE_MS after a "not yet"."""
        since = (self.samples - self.probed_at) * 1000 // 16000 if self.probed_at is not None else 0
        # Asked again only while the answer can still change the end: a "not yet" that holds the
        # turn (the words stop mid-phrase); otherwise the silence rule ends it soon anyway.
        again = self._holding() and since >= REPROBE_MS
        if (self.probed_at is None and silence_ms >= self.probe_ms) or again:
            self.probed_at = self.samples  # the answer so far stands until the new one comes
            events.append(Probe(self.samples))

    def verdict_for(self, sample: int, eot: float) -> None:
        """The model's answer to the question asked at `sample` (kept if it is this pause's
        latest)."""
        if self.state is State.SPEECH and sample == self.probed_at and self.eot is not None:
            self.verdict, self.answered = eot, True
            self.not_yet = eot < self.eot.threshold

    def decide(self) -> list[Event]:
        """End the turn now if the model said it is over and the pause goes on."""
        events: list[Event] = []
        if self.eot is not None and self.state is State.SPEECH and self.silence_frames > 0 and self._done():
            self._close(events, self.last_voiced, EndReason.MODEL, cut=self.paused_at)
        return events
