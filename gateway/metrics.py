"""Gateway Prometheus metrics (served on the gateway's own /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.messages import JobKind

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("stt_gateway_sessions", "Active sessions", registry=r)
        self.ready = Gauge("stt_gateway_ready", "Whether this gateway is ready (its /ready)", registry=r)
        self.live_decoders = Gauge(
            "stt_gateway_live_decoders", "Decoders whose heartbeat this gateway sees", registry=r
        )
        self.final_latency = Histogram(
            "stt_final_latency_seconds", "End of speech to final sent", buckets=LATENCY_BUCKETS, registry=r
        )
        self.interim_latency = Histogram(
            "stt_interim_latency_seconds", "Interim queued to interim sent", buckets=LATENCY_BUCKETS, registry=r
        )
        self.interims_coalesced = Counter(
            "stt_interims_coalesced",
            "Audio chunks that did not start an interim because too little new speech had arrived",
            registry=r,
        )
        self.interims_dropped = Counter("stt_interims_dropped", "Interim results not sent", ["reason"], registry=r)
        # Tenant names come from API_KEYS_FILE: the label's values are bounded by it.
        self.tenant_audio_seconds = Counter(
            "stt_audio_seconds", "Audio received, live and files, per tenant", ["tenant"], registry=r
        )
        self.limit_refusals = Counter(
            "stt_limit_refusals", "Sessions and uploads refused for a tenant's limit", ["tenant", "limit"], registry=r
        )
        self.speculative = Counter(
            "stt_speculative_finals",
            "Speculative finals by outcome: queued; ready (the result was in at the endpoint) or awaited "
            "(it came after) when used; cancelled (speech went on, or the turn ended otherwise), invalid "
            "(the final asked for another decode), discarded (a result that came and was not used)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("queued", "ready", "awaited", "cancelled", "invalid", "discarded"):
            self.speculative.labels(outcome)
        self.speculative_wasted = Counter(
            "stt_speculative_wasted_seconds", "Decoder time of speculative results not used", registry=r
        )
        self.decoded_seconds = Counter(
            "stt_gateway_decoded_seconds",
            "Decoder time of the results this gateway used or discarded, by job kind",
            ["kind"],
            registry=r,
        )
        for kind in JobKind:
            self.decoded_seconds.labels(kind)
        self.errors = Counter("stt_gateway_errors", "Errors sent to clients", ["code"], registry=r)
        self.audio_seconds = Counter("stt_gateway_audio_seconds", "Audio received", registry=r)
        self.files = Gauge("stt_gateway_files", "Uploaded files being transcribed", registry=r)
        self.file_parts = Counter(
            "stt_gateway_file_parts", "Parts of uploaded files transcribed (one job each)", registry=r
        )
        self.file_parts_waiting = Gauge(
            "stt_gateway_file_parts_waiting", "Parts of files in progress not yet transcribed", registry=r
        )
        self.throttled_seconds = Counter(
            "stt_gateway_throttled_seconds",
            "Time clients' sockets went unread: audio faster than real time "
            "beyond the burst, or too many finals outstanding",
            registry=r,
        )
