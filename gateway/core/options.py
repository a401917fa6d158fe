"""What a session is asked to do, whatever wire protocol asked: `SessionOptions`, and the input
rules every protocol applies to it (sample rates, languages, prompts, key terms).

A rule broken is a `BadInput` naming its error code; `fatal` ones end the connection (4400),
the others are answered with an error and the session goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.errors import SttError
from common.languages import AUTO, WHISPER_LANGUAGES

MIN_RATE, MAX_RATE = 8000, 96000
PROMPT_MAX_CHARS = 1000  # a longer prompt is refused, not cut: the client should know
EXCERPT_CHARS = 32  # an error quotes at most this much of what it refuses
MAX_KEYTERMS = 50
MAX_KEYTERM_CHARS = 64
MAX_KEYTERMS_CHARS = 500  # all of them together: they ride in the decoder's prompt


class BadInput(SttError):
    """A client message or option the gateway cannot act on; `code` is the error code sent back."""

    def __init__(self, code: str, message: str, fatal: bool = False, close: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal
        self.close = close  # the close code when fatal (default: bad request, 4400)


def excerpt(value: Any) -> str:
    """A short quote of a client's value for an error message (never the whole of it)."""
    text = repr(value)
    return text if len(text) <= EXCERPT_CHARS else "%s… (%d characters)" % (text[:EXCERPT_CHARS], len(text))


@dataclass(frozen=True)
class Turn:
    """How the end of an utterance is decided. `silence_min_ms`..`silence_max_ms`: the adaptive
    end-of-speech silence (equal: a fixed one); `on_silence` False: only the client ends a turn
    (finalize/commit), and MAX_UTTERANCE_S. `eager_ms` (eager end of turn): the silence that
    ends a turn whose latest text ends a sentence (0: `silence_min_ms`)."""

    silence_min_ms: int
    silence_max_ms: int
    pre_roll_ms: int
    on_silence: bool = True
    eager_ms: int = 0


@dataclass(frozen=True)
class EotRule:
    """A session whose turns end by the end-of-turn model (decoder/turnmodel.py): at a short
    pause the model is asked; at `threshold` or above the turn ends there; below, it is asked
    again as the silence grows, and `timeout_ms` of silence ends the turn regardless.
    `eager` (Flux's eager_eot_threshold): from this probability up, the utterance's speculative
    final is told as an eager end of turn (None: never)."""

    threshold: float = 0.5
    eager: float | None = None
    timeout_ms: int = 3000


@dataclass
class SessionOptions:
    sample_rate: int = 16000
    lang: str | None = None  # None: detected on the first utterance, then kept
    interim: bool = True
    word_timestamps: bool = False
    task: str = "transcribe"
    prompt: str = ""
    hotwords: tuple[str, ...] = ()
    turn: Turn | None = None  # None: the service's adaptive endpointer (settings)
    eager_ms: int = 0  # with the service's endpointer: eager end of turn (see Turn)
    eot: EotRule | None = None  # turns end by the end-of-turn model (None: by silence alone)
    diarize: bool = False  # each final says who spoke (gateway/core/speakers.py)
    max_speakers: int = 8
    extra: dict[str, Any] = field(default_factory=dict)


EAGER_MS = (60, 2000)  # the bounds of an eager end-of-turn silence
MAX_SPEAKERS = (1, 8)


def check_diarize(diarize: Any, max_speakers: Any, code: str = "bad_start") -> tuple[bool, int]:
    """`diarize` (true or false) and `max_speakers` (1-8, default 8)."""
    if diarize is None:
        diarize = False
    if not isinstance(diarize, bool):
        raise BadInput(code, "diarize must be true or false")
    if max_speakers is None:
        max_speakers = MAX_SPEAKERS[1]
    if (
        isinstance(max_speakers, bool)
        or not isinstance(max_speakers, int)
        or not (MAX_SPEAKERS[0] <= max_speakers <= MAX_SPEAKERS[1])
    ):
        raise BadInput(code, "max_speakers must be an integer of %d-%d" % MAX_SPEAKERS)
    return diarize, max_speakers


def check_eager(value: Any, name: str = "eager_eot_ms") -> int:
    """An eager end-of-turn silence in ms (0 or absent: off)."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not (value == 0 or EAGER_MS[0] <= value <= EAGER_MS[1]):
        raise BadInput("bad_start", "%s must be 0 (off) or %d-%d ms" % (name, *EAGER_MS))
    return value


EOT_THRESHOLD = (0.3, 0.99)
EOT_TIMEOUT_MS = (500, 60000)


def check_number(value: Any, name: str, lo: float, hi: float, code: str = "bad_start") -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadInput(code, "%s must be a number of %g-%g" % (name, lo, hi))
    return float(value)


def check_end_of_turn(obj: dict[str, Any]) -> EotRule | None:
    """A native `start`'s `end_of_turn` ("silence", the default, or "model": the end-of-turn
    model, with `eot_threshold` and `eot_timeout_ms`)."""
    how = obj.get("end_of_turn", "silence")
    if how not in ("silence", "model"):
        raise BadInput("bad_start", 'end_of_turn must be "silence" or "model"')
    if how == "silence":
        return None
    rule = EotRule()
    threshold = obj.get("eot_threshold", rule.threshold)
    timeout = obj.get("eot_timeout_ms", rule.timeout_ms)
    return EotRule(
        threshold=check_number(threshold, "eot_threshold", *EOT_THRESHOLD),
        timeout_ms=int(check_number(timeout, "eot_timeout_ms", *EOT_TIMEOUT_MS)),
    )


def check_rate(rate: Any, name: str = "sample_rate") -> int:
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise BadInput("bad_sample_rate", "%s must be an integer" % name, fatal=True)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise BadInput(
            "bad_sample_rate", "%s %d is not supported (%d-%d Hz)" % (name, rate, MIN_RATE, MAX_RATE), fatal=True
        )
    return rate


def check_language(lang: Any, name: str = "lang") -> str | None:
    """A Whisper language code, or None for "auto" (and for nothing given)."""
    if lang is not None and not isinstance(lang, str):
        raise BadInput("bad_start", "%s must be a string" % name)
    code = (lang or AUTO).strip().lower()
    if code != AUTO and code not in WHISPER_LANGUAGES:
        raise BadInput("unknown_language", "%s %s is not a Whisper language code (or auto)" % (name, excerpt(lang)))
    return None if code == AUTO else code


def check_served_language(lang: str | None, english_only: bool) -> None:
    if lang not in (None, "en") and english_only:
        raise BadInput(
            "unsupported_language",
            "this service's model is English-only; language %r cannot be served" % lang,
            fatal=True,
        )


def check_prompt(prompt: Any, name: str = "prompt") -> str:
    prompt = prompt or ""
    if not isinstance(prompt, str):
        raise BadInput("bad_start", "%s must be a string" % name)
    if len(prompt) > PROMPT_MAX_CHARS:
        raise BadInput(
            "field_too_long", "%s is %d characters; at most %d are taken" % (name, len(prompt), PROMPT_MAX_CHARS)
        )
    return prompt


def check_keyterms(terms: Any, name: str = "keyterms") -> tuple[str, ...]:
    """Key terms (names, jargon) the decoder should expect: at most MAX_KEYTERMS, each at most
    MAX_KEYTERM_CHARS, MAX_KEYTERMS_CHARS in all; blanks and repeats dropped."""
    if terms is None:
        return ()
    if isinstance(terms, str):
        terms = [terms]
    if not isinstance(terms, (list, tuple)) or not all(isinstance(t, str) for t in terms):
        raise BadInput("bad_keyterms", "%s must be a list of strings" % name)
    if len(terms) > MAX_KEYTERMS:
        raise BadInput("bad_keyterms", "%s holds %d terms; at most %d are taken" % (name, len(terms), MAX_KEYTERMS))
    out: list[str] = []
    for term in terms:
        clean = " ".join(term.split())
        if len(clean) > MAX_KEYTERM_CHARS:
            raise BadInput(
                "bad_keyterms", "a key term %s is longer than %d characters" % (excerpt(term), MAX_KEYTERM_CHARS)
            )
        if clean and clean not in out:
            out.append(clean)
    if sum(len(t) + 2 for t in out) > MAX_KEYTERMS_CHARS:
        raise BadInput("bad_keyterms", "%s are longer than %d characters together" % (name, MAX_KEYTERMS_CHARS))
    return tuple(out)
