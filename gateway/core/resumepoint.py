"""An endpointer's state as text, and back: what a gateway taking a session over needs to judge
the rest of the stream exactly as the gateway before it would have.

- its counters in an utterance (frames, voiced frames, the silence so far, the last voiced
  frame, a pause said), and the last text it was told (the end threshold follows it);
- the WebRTC VAD's own state (gateway/core/vadstate.py): a fresh VAD judges the same audio
  differently for seconds;
- `at`, the first session sample the client sends again (`held_from`), and the VAD's decisions
  on the frames from there to where it was: between utterances those are the pre-roll and a
  candidate onset, which the client sends again and which are judged by these decisions, not
  by the VAD a second time.
"""

from __future__ import annotations

import collections
import json
from typing import Any

from gateway.core import vadstate
from gateway.core.frames import FRAME_BYTES, FRAME_SAMPLES, RATE, RECENT_FRAMES, State, energy


class ResumePoint:
    """The part of the endpointer (gateway/core/endpoint.py) that saves and restores it."""

    vad: Any
    state: State
    samples: int
    pending: bytearray
    pre_roll: collections.deque[bytes]
    candidate: list[bytes]
    silence_frames: int
    utt_frames: int
    speech_frames: int
    utt_start: int
    recent: collections.deque[tuple[bytes, float]]
    last_text: str
    last_voiced: int
    paused_at: int | None
    answered: bool
    verdict: float | None
    probed_at: int | None
    decisions: collections.deque[bool]
    replay: collections.deque[bool]

    @property
    def held_from(self) -> int:
        """The first session sample a resuming client must send again: in an utterance, none
        before the end of what was framed (its audio is in its key); otherwise the pre-roll and
        a candidate onset, which are kept nowhere else."""
        if self.state is State.SPEECH:
            return self.samples
        if self.state is State.CANDIDATE:
            return max(0, self.utt_start)
        return max(0, self.samples - len(self.pre_roll) * FRAME_SAMPLES)

    def snapshot(self) -> str:
        """What a gateway taking the session over needs to go on from `held_from` exactly as
        this one would."""
        speech = self.state is State.SPEECH
        again = (self.samples - self.held_from) // FRAME_SAMPLES
        # The decisions on the frames the client sends again, then those still to be replayed
        # (a snapshot taken before a resumed client sent them all again).
        replay = [*list(self.decisions)[len(self.decisions) - again :], *self.replay] if again else list(self.replay)
        state: dict[str, Any] = {
            "speech": speech,
            "at": self.held_from,
            "vad": vadstate.save(self.vad),
            "replay": "".join("1" if d else "0" for d in replay),
            "last_text": self.last_text,
        }
        if speech:
            state.update(
                utt_start=self.utt_start,
                utt_frames=self.utt_frames,
                speech_frames=self.speech_frames,
                silence_frames=self.silence_frames,
                last_voiced=self.last_voiced,
                paused_at=self.paused_at,
                answered=self.answered,
                verdict=self.verdict,
            )
        return json.dumps(state, separators=(",", ":"))

    def restore(self, snapshot: str, recent_audio: bytes = b"") -> None:
        """Go on from a snapshot (of a fresh endpointer with the same settings). `recent_audio`:
        the open utterance's audio up to the snapshot's point, as much of its end as is at hand
        (the frames a forced cut chooses from; and a fresh VAD is primed with it when this
        build's VAD state cannot be loaded)."""
        state = json.loads(snapshot)
        self.samples = int(state["at"])
        self.pending.clear()
        self.pre_roll.clear()
        self.candidate = []
        self.paused_at = None
        self.last_text = state.get("last_text", "")
        skip = len(recent_audio) % FRAME_BYTES
        frames = [recent_audio[i : i + FRAME_BYTES] for i in range(skip, len(recent_audio), FRAME_BYTES)]
        if not vadstate.load(self.vad, state.get("vad", "")):
            for frame in frames:
                self.vad.is_speech(frame, RATE)  # brought near its state: its decisions are not used
        self.replay = collections.deque(c == "1" for c in state.get("replay", ""))
        self.decisions.clear()
        if not state.get("speech"):
            self.state = State.IDLE
            self.silence_frames = 0
            return
        self.state = State.SPEECH
        self.utt_start = int(state["utt_start"])
        self.utt_frames = int(state["utt_frames"])
        self.speech_frames = int(state["speech_frames"])
        self.silence_frames = int(state["silence_frames"])
        self.last_voiced = int(state["last_voiced"])
        self.paused_at = state.get("paused_at")
        # A question in flight is lost with the gateway that asked it: asked again at the next
        # point of the pause (its answer so far is kept).
        self.answered, self.verdict, self.probed_at = bool(state.get("answered")), state.get("verdict"), None
        self.recent.clear()
        for frame in frames[-RECENT_FRAMES:]:
            self.recent.append((frame, energy(frame)))
