"""Framing, WebRTC VAD and adaptive endpointing on a session's 16 kHz audio.

Every session's audio is converted to 16 kHz first (it goes to Redis at that rate anyway), so
VAD always runs on 30 ms frames of 480 samples. This departs on purpose from framing at the
session rate: WebRTC VAD decides on an 8 kHz version of any input, so a 48 kHz frame gives the
same kind of decision at 9x the cost (measured: 26 us per 48 kHz frame against 2.8 us per 16 kHz
frame, more than the 48->16 kHz resampling, 0.26 ms per stream-second, that every session pays
anyway).

Utterance life:
- IDLE: the last PRE_ROLL_MS of frames are kept. A voiced frame starts a candidate.
- CANDIDATE: voiced frames are counted; once MIN_SPEECH_MS of them are seen the utterance
  opens (pre-roll + candidate audio). If silence lasts longer than the shortest end-of-speech
  threshold first, the burst was noise and is dropped.
- SPEECH: audio flows to the utterance. It ends after trailing silence of at least the
  adaptive threshold (below), or is cut at MAX_UTTERANCE_S at the quietest recent frame; the
  audio after the cut opens the next utterance at once.

Adaptive end-of-speech threshold, between FINAL_SILENCE_MS_MIN and FINAL_SILENCE_MS_MAX:
- it starts at MAX for a short utterance (a speaker who said one word is likely mid-phrase)
  and moves linearly toward MIN as the utterance grows from 1 s to 8 s of speech (long
  utterances are worth closing promptly);
- when the latest interim text ends a sentence (. ? ! or the like), it is MIN at once;
- when the latest interim ends mid-phrase (a comma, a conjunction or article), it is MAX;
- eager end of turn (a session's option): when the latest text ends a sentence it is that
  session's `eager_ms` instead of MIN.

Speculation: once the trailing silence reaches `speculate_ms` (`eot_speculate_ms` in a session
whose turns end by the end-of-turn model, and at most that in one without interims) the
endpointer says so (`Paused`: the session queues the would-be final of the audio so far), and
says again if speech comes back before the end (`SpeechWentOn`: the session cancels it). An
utterance that ends on silence after such a pause is cut at the pause (`Ended.cut`): its final
decodes what the speculative job did, whether or not that job is still known.

Resuming: `snapshot()` is what another gateway needs to judge the rest of the stream exactly as
this one would (counters, the last text, the VAD's own state: gateway/core/vadstate.py, and the
decisions on the frames the client sends again), and `restore()` takes it.
"""

from __future__ import annotations

import collections

from gateway.core.events import EndReason
from gateway.core.frames import (
    FRAME_BYTES,
    FRAME_MS,
    FRAME_SAMPLES,
    RATE,
    RECENT_FRAMES,
    Audio,
    Began,
    Ended,
    Event,
    Paused,
    State,
    WentOn,
    end_threshold_ms,
    energy,
)
from gateway.core.options import EotRule
from gateway.core.resumepoint import ResumePoint
from gateway.core.turntaking import TurnAsking


class Endpointer(ResumePoint, TurnAsking):
    def __init__(
        self,
        vad_mode: int,
        pre_roll_ms: int,
        min_speech_ms: int,
        silence_min_ms: int,
        silence_max_ms: int,
        max_utterance_s: float,
        on_silence: bool = True,
        speculate_ms: int = 0,
        eager_ms: int = 0,
        eot: EotRule | None = None,
        eot_probe_ms: int = 150,
        eot_speculate_ms: int = 30,
        interims: bool = True,
    ) -> None:
        import webrtcvad

        self.vad_mode = vad_mode
        self.vad = webrtcvad.Vad(vad_mode)
        self.pre_roll: collections.deque[bytes] = collections.deque(maxlen=max(0, pre_roll_ms // FRAME_MS))
        self.min_speech_frames = max(1, -(-min_speech_ms // FRAME_MS))
        self.silence_min_ms, self.silence_max_ms = silence_min_ms, silence_max_ms
        self.on_silence = on_silence  # False: only force_end (and MAX_UTTERANCE_S) ends an utterance
        self.speculate_ms = speculate_ms  # 0: no pauses said
        # In model mode the words must be in when the model answers (they weigh its answer, and
        # the turn's end waits for them): the pause is said sooner.
        self.eot_speculate_ms = eot_speculate_ms
        # A session without interims (Deepgram's default) has no words but the would-be final's
        # for the silence rule to weigh: they too must be in before the shortest end.
        self.interims = interims
        self.eager_ms = eager_ms
        self.paused_at: int | None = None  # the sample a pause was said at, in this silence
        self.max_frames = int(max_utterance_s * 1000 // FRAME_MS)
        self.state = State.IDLE
        self.pending = bytearray()  # a partial frame carried to the next chunk
        self.samples = 0  # session samples framed so far
        self.candidate: list[bytes] = []
        self.candidate_voiced = 0
        self.silence_frames = 0
        self.utt_frames = 0
        self.speech_frames = 0
        self.utt_start = 0
        self.recent: collections.deque[tuple[bytes, float]] = collections.deque(maxlen=RECENT_FRAMES)
        self.last_text = ""
        self.text_through = 0  # the session sample the last text's audio reached
        self.text_whole = False  # the last text is a speculative final's
        self.last_voiced = 0
        # The VAD's decisions on the latest frames (what a resume replays), and the ones to
        # replay on frames a resuming client sends again.
        self.decisions: collections.deque[bool] = collections.deque(maxlen=256)
        self.replay: collections.deque[bool] = collections.deque()
        self._init_model(eot, eot_probe_ms)  # the end-of-turn model's part (gateway/core/turntaking.py)

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def pause_ms(self) -> int:
        """The trailing silence at which a pause is said (0: never)."""
        if not self.speculate_ms:
            return 0
        if self.eot is not None and self.on_silence:
            return self.eot_speculate_ms
        return self.speculate_ms if self.interims else min(self.speculate_ms, self.eot_speculate_ms)

    def threshold_ms(self) -> float:
        if not self.on_silence:
            return float("inf")
        return end_threshold_ms(
            self.speech_frames * FRAME_MS, self.last_text, self.silence_min_ms, self.silence_max_ms, self.eager_ms
        )

    def configure(
        self,
        silence_min_ms: int,
        silence_max_ms: int,
        pre_roll_ms: int,
        on_silence: bool,
        eager_ms: int = 0,
        eot: EotRule | None = None,
    ) -> None:
        """New end-of-speech rules, from the next frame on (a client may change them mid-session)."""
        self.silence_min_ms, self.silence_max_ms, self.on_silence = silence_min_ms, silence_max_ms, on_silence
        self.eager_ms = eager_ms
        self.eot = eot
        frames = max(0, pre_roll_ms // FRAME_MS)
        if frames != self.pre_roll.maxlen:
            self.pre_roll = collections.deque(self.pre_roll, maxlen=frames)

    def heard(self, text: str, through: int, whole: bool = False) -> None:
        """The latest words heard of the open utterance (an interim's, or its speculative final's:
        `whole`), decoded from its audio up to session sample `through`."""
        if not whole and self.text_whole and self.text_through >= min(through, self.last_voiced):
            # The speculative final decoded this pause as the final will; an interim (a cheaper
            # pass, often a word short) that reaches no further speech must not overrule it:
            # it could hold a finished sentence as if it stopped mid-phrase.
            return
        self.last_text, self.text_through, self.text_whole = text, through, whole

    def reset(self) -> None:
        """Forget the utterance in progress (the client discarded it): back to waiting for speech."""
        self.state = State.IDLE
        self.candidate = []
        self.pre_roll.clear()
        self.silence_frames = 0
        self.paused_at = None

    def feed(self, pcm16k: bytes) -> list[Event]:
        self.pending += pcm16k
        events: list[Event] = []
        n = len(self.pending) // FRAME_BYTES
        for i in range(n):
            self._frame(bytes(self.pending[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]), events)
        del self.pending[: n * FRAME_BYTES]
        return _merge_audio(events)

    def _frame(self, frame: bytes, events: list[Event]) -> None:
        voiced = self.replay.popleft() if self.replay else bool(self.vad.is_speech(frame, RATE))
        self.decisions.append(voiced)
        start_sample = self.samples
        self.samples += FRAME_SAMPLES
        if self.state is State.IDLE:
            if voiced:
                self.state = State.CANDIDATE
                self.candidate = [frame]
                self.candidate_voiced = 1
                self.silence_frames = 0
                self.utt_start = start_sample - len(self.pre_roll) * FRAME_SAMPLES
                self._maybe_open(events)
            else:
                self.pre_roll.append(frame)
            return
        if self.state is State.CANDIDATE:
            self.candidate.append(frame)
            if voiced:
                self.candidate_voiced += 1
                self.silence_frames = 0
                self._maybe_open(events)
            else:
                self.silence_frames += 1
                if self.silence_frames * FRAME_MS >= self.silence_min_ms:
                    # A burst shorter than MIN_SPEECH_MS: noise. Its frames become pre-roll.
                    for f in self.candidate:
                        self.pre_roll.append(f)
                    self.state = State.IDLE
                    self.candidate = []
            return
        # SPEECH
        self.utt_frames += 1
        self.recent.append((frame, energy(frame)))
        events.append(Audio(start_sample, frame))
        if voiced:
            self.speech_frames += 1
            self.silence_frames = 0
            self.last_voiced = self.samples
            self._speech_heard()
            if self.paused_at is not None:
                self.paused_at = None
                events.append(WentOn(start_sample))
        else:
            self.silence_frames += 1
            silence_ms = self.silence_frames * FRAME_MS
            model = self.eot is not None and self.on_silence
            if model and self._model_ends(silence_ms, events):
                return
            if not model and silence_ms >= self.threshold_ms():
                # The utterance ends where its speech ended, not where the silence was judged long
                # enough; its audio keeps the trailing silence (Whisper needs no trimming).
                self._close(events, self.last_voiced, EndReason.SILENCE, cut=self.paused_at)
                return
            pause_ms = self.pause_ms()
            if pause_ms and self.paused_at is None and silence_ms >= pause_ms and self.on_silence:
                self.paused_at = self.samples
                events.append(Paused(self.samples))
            if model:
                self._model_probe(silence_ms, events)
        if self.utt_frames >= self.max_frames:
            self._cut(events)

    def _maybe_open(self, events: list[Event]) -> None:
        if self.candidate_voiced < self.min_speech_frames:
            return
        audio = b"".join(self.pre_roll) + b"".join(self.candidate)
        start = max(0, self.utt_start)
        self.pre_roll.clear()
        self._open(events, start, audio, len(self.candidate))
        self.candidate = []

    def _open(self, events: list[Event], start: int, audio: bytes, frames: int) -> None:
        self.state = State.SPEECH
        self.utt_start = start
        self.utt_frames = len(audio) // FRAME_BYTES
        self.speech_frames = frames
        self.silence_frames = 0
        self.paused_at = None
        self.recent.clear()
        self.last_text, self.text_whole = "", False
        self.last_voiced = self.samples
        events.append(Began(start))
        events.append(Audio(start, audio))

    def _close(self, events: list[Event], at_sample: int, reason: EndReason, cut: int | None = None) -> None:
        events.append(Ended(at_sample, reason, decided=self.samples, cut=cut))
        self.state = State.IDLE
        self.paused_at = None
        self.pre_roll.clear()
        self.candidate = []

    def _cut(self, events: list[Event]) -> None:
        """MAX_UTTERANCE_S reached: end at the quietest of the last ~1.5 s of frames; what
        follows it opens the next utterance (the one case where audio goes to Redis twice)."""
        frames = list(self.recent)
        quietest = min(range(len(frames)), key=lambda i: frames[i][1]) if frames else len(frames) - 1
        carried = b"".join(f for f, _ in frames[quietest + 1 :])
        carry_frames = len(carried) // FRAME_BYTES
        cut_sample = self.samples - carry_frames * FRAME_SAMPLES
        events.append(Ended(cut_sample, EndReason.MAX_LENGTH, decided=self.samples, tail_bytes=len(carried)))
        self._open(events, cut_sample, carried, carry_frames)

    def force_end(self) -> list[Event]:
        """`finalize` or `stop`: end the utterance now. A candidate too short to count is dropped."""
        events: list[Event] = []
        if self.state is State.SPEECH:
            tail = bytes(self.pending)
            if tail:
                events.append(Audio(self.samples, tail))
                self.samples += len(tail) // 2
                self.pending.clear()
            self._close(events, self.samples, EndReason.FINALIZE)
        elif self.state is State.CANDIDATE:
            self.state = State.IDLE
            self.candidate = []
        return _merge_audio(events)


def _merge_audio(events: list[Event]) -> list[Event]:
    merged: list[Event] = []
    for ev in events:
        if isinstance(ev, Audio):
            if not ev.pcm:
                continue
            last = merged[-1] if merged else None
            if isinstance(last, Audio):
                merged[-1] = Audio(last.sample, last.pcm + ev.pcm)
                continue
        merged.append(ev)
    return merged
