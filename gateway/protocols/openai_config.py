"""OpenAI Realtime session settings (formats, turn detection) as the gateway's own."""

from __future__ import annotations

from typing import Any

from gateway.core.options import BadInput, EotRule, Turn, check_rate, excerpt

PCM_RATE = 24000  # audio/pcm (beta pcm16) is 24 kHz mono PCM16
G711_RATE = 8000
MIN_COMMIT_MS = 100  # OpenAI's own floor: a shorter buffer cannot be committed
MAX_SILENCE_MS = 10000
# semantic_vad's eagerness picks the adaptive endpointer's bounds and its eager end of turn (ms of
# trailing silence: least, most, and after text that ends a sentence; 0: the least).
EAGERNESS = {"low": (700, 1200, 0), "medium": None, "auto": None, "high": (250, 450, 150)}
# With the end-of-turn model (where the decoders serve it), eagerness is how sure it must be that
# the turn is over, and how long a silence ends it whatever it says (OpenAI's own: up to 8 s at
# low, 4 s at medium and auto, 2 s at high). The silence rules above are the fallback.
EOT_EAGERNESS = {
    "low": EotRule(0.8, timeout_ms=8000),
    "medium": EotRule(0.6, timeout_ms=4000),
    "auto": EotRule(0.6, timeout_ms=4000),
    "high": EotRule(0.4, timeout_ms=2000),
}
BETA_FORMATS = {
    "pcm16": ("audio/pcm", PCM_RATE),
    "g711_ulaw": ("audio/pcmu", G711_RATE),
    "g711_alaw": ("audio/pcma", G711_RATE),
}
GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
LAW = {"audio/pcmu": "ulaw", "audio/pcma": "alaw"}


def parse_format(fmt: Any, beta: bool) -> tuple[str, int]:
    """(GA format type, sample rate) of a session's audio format."""
    if beta or isinstance(fmt, str):
        if fmt not in BETA_FORMATS:
            raise BadInput(
                "invalid_audio_format",
                "input_audio_format %s is not one of %s" % (excerpt(fmt), ", ".join(BETA_FORMATS)),
            )
        return BETA_FORMATS[fmt]
    if not isinstance(fmt, dict) or fmt.get("type") not in GA_FORMATS:
        raise BadInput(
            "invalid_audio_format",
            "format %s is not one of %s" % (excerpt(fmt), ", ".join("{'type': '%s'}" % t for t in GA_FORMATS)),
        )
    kind = fmt["type"]
    if kind in LAW:
        return kind, G711_RATE
    # OpenAI takes 24 kHz only; any rate the service resamples is taken here.
    return kind, check_rate(fmt.get("rate", PCM_RATE), "format.rate")


def parse_turn(turn: Any, default_pre_roll_ms: int) -> Turn | None:
    """The endpointer's rules for a `turn_detection` (None: the service's adaptive one).
    `server_vad`: `silence_duration_ms` is the fixed end-of-speech silence, `prefix_padding_ms`
    the pre-roll, `threshold` is accepted and ignored (VAD_MODE sets WebRTC VAD's
    aggressiveness). `semantic_vad`: the adaptive endpointer, its bounds set by `eagerness`.
    `null`: only a commit ends a turn."""
    if turn is None:
        return Turn(0, 0, default_pre_roll_ms, on_silence=False)
    if not isinstance(turn, dict):
        raise BadInput("invalid_turn_detection", "turn_detection must be an object or null")
    kind = turn.get("type")
    pre_roll = int_field(turn, "prefix_padding_ms", default_pre_roll_ms, 0, 2000)
    if kind == "server_vad":
        silence = int_field(turn, "silence_duration_ms", 500, 30, MAX_SILENCE_MS)
        return Turn(silence, silence, pre_roll)
    if kind == "semantic_vad":
        eagerness = turn.get("eagerness", "auto")
        if eagerness not in EAGERNESS:
            raise BadInput("invalid_turn_detection", "eagerness must be one of %s" % ", ".join(EAGERNESS))
        bounds = EAGERNESS[eagerness]
        if bounds is None:
            return None
        return Turn(bounds[0], bounds[1], pre_roll, eager_ms=bounds[2])
    raise BadInput("invalid_turn_detection", "turn_detection type %s is not server_vad or semantic_vad" % excerpt(kind))


def parse_eot(turn: Any) -> EotRule | None:
    """The end-of-turn model's rule for a checked `turn_detection` (semantic_vad's; None: silence)."""
    if isinstance(turn, dict) and turn.get("type") == "semantic_vad":
        return EOT_EAGERNESS[turn.get("eagerness", "auto")]
    return None


def int_field(obj: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = obj.get(name)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadInput("invalid_turn_detection", "%s must be a number of %d-%d" % (name, lo, hi))
    return int(value)
