"""Every setting of the service, read once from the environment into one typed object.

Names are unprefixed (the seed's `MODEL_NAME`, `INTERIM_MIN_MS`, ... keep their meaning and
defaults). A bad value raises `SettingsError` naming the variable; entry points turn that into
the `CONFIG` exit code before anything starts.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from common import protocol
from common.errors import SettingsError
from common.logs import redact
from common.redisconn import BadRedisUrl
from common.redisconn import check_url as check_redis_url


def _setting(
    default: Any, help: str, *, lo: float | None = None, hi: float | None = None, choices: tuple[str, ...] | None = None
) -> Any:
    return field(default=default, metadata={"help": help, "lo": lo, "hi": hi, "choices": choices})


@dataclass(frozen=True)
class SharedSettings:
    """What every process reads: where Redis is, logging, liveness, shutdown, and the rules both
    sides of a job agree on."""

    REDIS_URL: str = _setting(
        "",
        "Redis URL, or redis+sentinel://[:password@]host:26379,.../service_name[/db] for a Sentinel-managed "
        "primary; empty: redis://127.0.0.1:6379/0 (stt up: a private one)",
    )
    LOG_LEVEL: str = _setting("INFO", "logging level", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    HEARTBEAT_S: float = _setting(2.0, "node heartbeat period", lo=0.1)
    NODE_TTL_S: float = _setting(10.0, "a node without heartbeat for this long is gone", lo=0.5)
    SHUTDOWN_TIMEOUT_S: float = _setting(20.0, "bound on draining at shutdown", lo=0.0)
    MAX_DELIVERIES: int = _setting(
        3, "tries of a final (gateway re-queues, decoder deliveries) before it fails with an error naming it", lo=1
    )
    # Not a setting: the names that were given (in the environment or as overrides) rather than
    # left at their defaults. A default MODEL_NAME may fall back to the bundled model; a given one
    # never does.
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False, metadata={"internal": True})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """The settings of this class from the environment (others are not read)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in _fields(cls):
            raw = env.get(f.name)
            if raw is None or (raw == "" and f.type != "str"):
                continue
            if raw and not raw.strip():
                # Someone meant to set it; "unset" must be said by not setting it.
                raise SettingsError(f.name, raw, "is blank (leave it unset for the default)")
            values[f.name] = _parse(f, raw)
        values.update(overrides)
        settings = cls(**values, given=frozenset(values))
        settings.check()
        return settings

    def is_set(self, name: str) -> bool:
        """Whether `name` was given rather than left at its default."""
        return name in self.given

    def check(self) -> None:
        for f in _fields(type(self)):
            value = getattr(self, f.name)
            lo, hi, choices = f.metadata["lo"], f.metadata["hi"], f.metadata["choices"]
            if lo is not None and value < lo:
                raise SettingsError(f.name, value, "must be >= %s" % lo)
            if hi is not None and value > hi:
                raise SettingsError(f.name, value, "must be <= %s" % hi)
            if choices is not None and value not in choices:
                raise SettingsError(f.name, value, "must be one of %s" % ", ".join(choices))
        if self.REDIS_URL:
            try:
                check_redis_url(self.REDIS_URL)
            except BadRedisUrl as exc:
                raise SettingsError("REDIS_URL", redact(self.REDIS_URL), str(exc)) from None

    def replace(self, **changes: Any) -> Self:
        new = dataclasses.replace(self, **changes, given=self.given | frozenset(changes))
        new.check()
        return new

    @property
    def redis_url(self) -> str:
        return self.REDIS_URL or "redis://127.0.0.1:6379/0"

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables (what `stt up` hands its children): those given
        or changed, so that a child sees a default as a default."""
        return {
            f.name: str(getattr(self, f.name))
            for f in _fields(type(self))
            if f.name in self.given or getattr(self, f.name) != f.default
        }


@dataclass(frozen=True)
class DecoderSettings(SharedSettings):
    """A decoder's: its model and device, how it batches and guards its decodes."""

    MODEL_NAME: str = _setting("base", "faster-whisper size name or local CTranslate2 directory")
    DEVICE: str = _setting("auto", "auto | cuda | cpu", choices=("auto", "cuda", "cpu"))
    COMPUTE_TYPE: str = _setting("float16", "CTranslate2 compute type; on a CPU, float16 variants fall back to int8")
    DEVICE_INDEX: int = _setting(0, "GPU index of this decoder", lo=0)
    CPU_THREADS: int = _setting(
        0, "CTranslate2 threads per lane (0: half the cores the process may use, at most 4)", lo=0
    )
    BACKGROUND_NICE: int = _setting(
        19,
        "CPU: nice of the interim/file lane, which then has a model copy of its own (0: shares the final lane's)",
        lo=0,
        hi=19,
    )
    DECODER_ID: str = _setting("", "consumer name; empty: host-pid")
    METRICS_PORT: int = _setting(9100, "decoder /metrics port (0: off)", lo=0, hi=65535)
    METRICS_HOST: str = _setting("127.0.0.1", "decoder /metrics bind address")
    DECODE_BATCH: int = _setting(
        4, "most jobs of one kind decoded together (a CPU decoder's finals: one at a time)", lo=1, hi=64
    )
    BATCH_WAIT_MS: int = _setting(0, "longest wait to fill a batch of interims", lo=0, hi=1000)
    FINAL_BEAM: int = _setting(5, "beam size of final decodes", lo=1, hi=16)
    CLAIM_IDLE_MS: int = _setting(15000, "a final idle this long in another consumer is claimed", lo=100)
    RESULT_TTL_S: int = _setting(600, "how long a delivered final is kept for re-queued jobs", lo=1)
    TOKEN_BUDGET_BASE: int = _setting(16, "decode token budget: base", lo=1, hi=200)
    TOKEN_BUDGET_PER_S: float = _setting(8.0, "decode token budget: per second of audio", lo=0.5)
    NO_SPEECH_THRESHOLD: float = _setting(0.6, "no-speech probability guard", lo=0.0, hi=1.0)
    LOG_PROB_THRESHOLD: float = _setting(-1.0, "average log-probability guard", hi=0.0)
    COMPRESSION_RATIO_THRESHOLD: float = _setting(2.4, "repetition guard (gzip ratio)", lo=1.0)
    HALLUCINATION_NO_SPEECH: float = _setting(
        0.75, "a segment above this no-speech probability and below HALLUCINATION_LOG_PROB is dropped", lo=0.0, hi=1.0
    )
    HALLUCINATION_LOG_PROB: float = _setting(-0.5, "see HALLUCINATION_NO_SPEECH", hi=0.0)
    FINAL_WINDOW_PAD_S: float = _setting(
        4.0,
        "the encoder sees a final's audio (context included) plus this much padding, in 2 s steps (30: all of it)",
        lo=0.0,
        hi=30.0,
    )
    INTERIM_WINDOW_PAD_S: float = _setting(2.0, "the same for interims", lo=0.0, hi=30.0)
    BATCH_SHARE: float = _setting(
        0.25, "share of the background lane's time file jobs get while interims wait too", lo=0.01, hi=1.0
    )
    WINDOW_MIN_S: float = _setting(
        0.0, "a cut encoder window is never shorter than this (0: as short as audio + pad)", lo=0.0, hi=30.0
    )
    AUDIO_WAIT_S: float = _setting(
        30.0,
        "a final whose audio Redis lacks (a failover lost the newest appends) is left for its gateway to re-queue "
        "with the audio for this long after it was queued; then it fails",
        lo=0.0,
    )
    TURN_MODEL: str = _setting(
        "",
        "end-of-turn model file (empty: <python prefix>/share/stt-cluster/smart-turn-v3.2-cpu.onnx, where "
        "`python -m stt.turnfile` puts it); missing: turns end on silence alone",
    )
    SPEAKER_MODEL: str = _setting(
        "",
        "speaker encoder weights (empty: <python prefix>/share/stt-cluster/resemblyzer-pretrained.pt, where "
        "`python -m stt.turnfile` puts them); missing: sessions that ask for speaker labels are refused",
    )
    DECODERS: int = _setting(
        0,
        "decoder processes for stt up (0: on each GPU as many as its memory holds, at most 4; else 2 on the CPU)",
        lo=0,
        hi=64,
    )

    @property
    def decoder_id(self) -> str:
        return self.DECODER_ID or "%s-%d" % (socket.gethostname(), os.getpid())


@dataclass(frozen=True)
class GatewaySettings(SharedSettings):
    """A gateway's: endpointing and interims, its server, its limits, files, resume."""

    INTERIM_MIN_MS: int = _setting(350, "new speech needed before the next interim", lo=0)
    FINAL_SILENCE_MS_MIN: int = _setting(400, "shortest trailing silence that ends an utterance", lo=30)
    FINAL_SILENCE_MS_MAX: int = _setting(700, "longest trailing silence that ends an utterance", lo=30)
    SPECULATE_MS: int = _setting(
        200,
        "trailing silence after which the would-be final is decoded while the endpoint is still open (0: off)",
        lo=0,
        hi=5000,
    )
    CONTEXT_S: float = _setting(
        20.0,
        "a final is decoded after up to this much of the previous utterance's audio, its text forced (0: off)",
        lo=0.0,
        hi=28.0,
    )
    FINAL_KEEPS_STABLE: bool = _setting(
        False, "a final keeps the prefix its interims announced as stable (decoded with it forced)"
    )
    EOT_PROBE_MS: int = _setting(
        150, "in a session whose turns end by the end-of-turn model: the pause at which the model is first asked", lo=30
    )
    EOT_SPECULATE_MS: int = _setting(
        30,
        "in such a session, and one without interims: the pause at which the would-be final is decoded (its words "
        "weigh the model's answer, and are the silence rule's only words); 30 is the VAD's first silent frame, "
        "which comes ~100 ms after the speech ends (the VAD's own hangover)",
        lo=30,
        hi=5000,
    )
    EOT_CONTEXT_S: float = _setting(
        6.0,
        "in a session without interims: CONTEXT_S, at most (a final's decode grows with its context: on a CPU core "
        "tiny.en takes ~70 ms without, ~220 ms after 8 s, ~590 ms after 20 s, and the turn's end waits for it)",
        lo=0.0,
        hi=28.0,
    )
    EOT_MODEL_CONTEXT_S: float = _setting(
        0.0,
        "in a session whose turns end by the end-of-turn model: CONTEXT_S, at most (0: its finals are decoded "
        "without the previous utterance's audio, their prompt still the text before; the turn's end waits for "
        "the would-be final, which a context makes ~1.5 times as long)",
        lo=0.0,
        hi=28.0,
    )
    EOT_MODEL: str = _setting(
        "on",
        "the end-of-turn model for the sessions that ask for it: on (wherever a decoder serves it), off, or auto "
        "(only where a decoder on a GPU serves it: CPU decoders then spend their cores on words alone)",
        choices=("auto", "on", "off"),
    )
    HOST: str = _setting("0.0.0.0", "gateway bind address (stt up: 127.0.0.1 unless set)")
    PORT: int = _setting(8000, "gateway port", lo=0, hi=65535)
    GATEWAY_ID: str = _setting("", "gateway id (its result channel); empty: host-pid")
    API_KEY: str = _setting(
        "", "if set, clients must send one of these comma-separated keys (Bearer header or ?token=)"
    )
    API_KEYS_FILE: str = _setting(
        "", "a TOML file of named keys with limits (docs/operations/tenants.md); read again when it changes"
    )
    AUDIT_LOG: str = _setting(
        "", "the audit log's file (a JSON line per session and file, rotated); empty: stdout; off: none"
    )
    AUDIT_LOG_MAX_MB: float = _setting(100.0, "the audit log's size at which it is rotated (5 kept)", lo=0.01)
    TENANT_LEASE_S: float = _setting(
        30.0, "a tenant's session or upload slot lapses this long after its gateway stops renewing it", lo=1.0
    )
    VAD_MODE: int = _setting(2, "WebRTC VAD aggressiveness", lo=0, hi=3)
    PRE_ROLL_MS: int = _setting(300, "audio kept before speech onset", lo=0, hi=2000)
    MIN_SPEECH_MS: int = _setting(150, "shorter voiced bursts are noise", lo=30)
    MAX_UTTERANCE_S: float = _setting(25.0, "forced cut (below Whisper's 30 s window)", lo=1.0, hi=29.0)
    IDLE_TIMEOUT_S: float = _setting(30.0, "close a session without audio or keepalive", lo=0.1)
    MAX_SESSION_S: float = _setting(3600.0, "close every session after this", lo=1.0)
    FINAL_TIMEOUT_S: float = _setting(20.0, "re-queue a final without result after this", lo=0.1)
    INTERIM_DEADLINE_MS: int = _setting(1500, "an interim not decoded by then is dropped", lo=50)
    FILE_PART_S: float = _setting(
        20.0,
        "an uploaded file's spans of speech are joined into parts of at most this (up to MAX_UTTERANCE_S)",
        lo=1.0,
        hi=29.0,
    )
    MAX_FILE_MB: int = _setting(200, "largest upload POST /v1/audio/transcriptions takes (MB)", lo=1)
    MAX_FILE_S: float = _setting(
        14400.0, "longest audio an upload may hold (s): refused once passed (0: no limit)", lo=0
    )
    MAX_FILE_DECODES: int = _setting(2, "uploads a gateway decodes at once (the others wait their turn)", lo=1)
    AUDIO_TTL_S: int = _setting(600, "TTL of an utterance's audio key", lo=10)
    MAX_SESSIONS: int = _setting(256, "connections per gateway before 1013 (counted from accept)", lo=1)
    MAX_FINAL_BACKLOG: int = _setting(500, "final queue depth before new sessions get 1013", lo=1)
    MAX_FRAME_BYTES: int = _setting(1 << 20, "largest WebSocket message", lo=1024)
    START_TIMEOUT_S: float = _setting(5.0, "a connection that sends no start by then is closed", lo=0.1)
    AUDIO_BURST_S: float = _setting(10.0, "audio a session may send ahead of real time", lo=0.5)
    AUDIO_RATE_MAX: float = _setting(1.5, "sustained audio speed a session may send, x real time", lo=1.0)
    MAX_PENDING_FINALS: int = _setting(8, "finals a session may have outstanding before its audio waits", lo=1)
    RESUME_TTL_S: float = _setting(
        protocol.RESUME_TTL_S,
        "a native session can be resumed this long after its connection broke (0: sessions are not kept)",
        lo=0,
    )
    SEND_TIMEOUT_S: float = _setting(10.0, "a client that reads nothing for this long is closed", lo=0.5)
    GATEWAYS: int = _setting(
        1, "gateway processes for stt up, all on PORT (the kernel spreads connections: SO_REUSEPORT)", lo=1, hi=64
    )

    def check(self) -> None:
        super().check()
        if self.FINAL_SILENCE_MS_MIN > self.FINAL_SILENCE_MS_MAX:
            raise SettingsError(
                "FINAL_SILENCE_MS_MIN",
                self.FINAL_SILENCE_MS_MIN,
                "must not exceed FINAL_SILENCE_MS_MAX (%d)" % self.FINAL_SILENCE_MS_MAX,
            )
        if self.API_KEY and any(not key.strip() for key in self.API_KEY.split(",")):
            raise SettingsError("API_KEY", "<hidden>", "holds a blank key (leave it unset to switch auth off)")

    @property
    def gateway_id(self) -> str:
        return self.GATEWAY_ID or "%s-%d" % (socket.gethostname(), os.getpid())


@dataclass(frozen=True)
class Settings(GatewaySettings, DecoderSettings):
    """Every setting: what `stt up` reads (and hands its children), `stt settings` lists, and the
    tests build. Each process itself reads only its own class."""


# Each process's own settings, in the order the docs list them.
SECTIONS: tuple[tuple[str, type[SharedSettings]], ...] = (
    ("every process", SharedSettings),
    ("gateway", GatewaySettings),
    ("decoder", DecoderSettings),
)


def _fields(cls: type[SharedSettings] = Settings) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def own_fields(cls: type[SharedSettings]) -> list[dataclasses.Field[Any]]:
    """The settings `cls` adds to the ones every process reads."""
    shared = {f.name for f in _fields(SharedSettings)}
    return [f for f in _fields(cls) if cls is SharedSettings or f.name not in shared]


def describe(cls: type[SharedSettings] = Settings) -> list[tuple[str, str, str]]:
    """(name, default, help) of every setting of `cls`, for `stt settings` and the docs."""
    return [(f.name, str(f.default), f.metadata["help"]) for f in _fields(cls)]


def markdown_table() -> str:
    """Every setting, one Markdown table per process (the docs' Settings page is made from it)."""
    out = []
    for title, cls in SECTIONS:
        rows = ["**%s** (`%s`)" % (title.capitalize(), cls.__name__), "", "| setting | default | meaning |"]
        rows.append("| --- | --- | --- |")
        rows += [
            "| `%s` | %s | %s |"
            % (f.name, "`%s`" % f.default if str(f.default) else "(empty)", f.metadata["help"].replace("|", "\\|"))
            for f in own_fields(cls)
        ]
        out.append("\n".join(rows) + "\n")
    return "\n".join(out)


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    text = raw.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
    except ValueError:
        raise SettingsError(f.name, raw, "is not a valid %s" % kind) from None
    if f.name == "LOG_LEVEL":
        return text.upper()
    return text
