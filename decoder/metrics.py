"""Decoder Prometheus metrics, served on METRICS_PORT.

Queue depth and the oldest job's age are read from Redis at scrape time (so they agree with
Redis, not with what this decoder last saw). Because processed entries are XDELeted, a stream's
length is exactly its work in flight: not yet delivered plus pending.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common import keys, queues
from common.clock import now_ms
from common.messages import JobKind
from common.redisconn import close as close_client
from common.redisconn import sync_client

logger = logging.getLogger(__name__)

DECODE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
# cancelled: a speculative job whose speaker went on, a departed session's final; shed: one past
# its deadline, undecoded.
# audio_missing: a final whose audio Redis lacks (after a failover), left for its gateway to re-queue.
OUTCOMES = (
    "done",
    "cached",
    "failed",
    "stale_dropped",
    "superseded",
    "cancelled",
    "shed",
    "reclaimed",
    "dead",
    "audio_missing",
    "device_error",
)


def stream_depths(client: redis.Redis) -> dict[str, tuple[int, float]]:
    """{stream: (depth, age in seconds of its oldest entry)} read from Redis now."""
    pipe = client.pipeline(transaction=False)
    streams = keys.STREAMS
    for stream in streams:
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
        # The first entry is the oldest one not done: done ones are trimmed (common/queues.py).
        pipe.xrange(stream, count=1)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies[0::3]:
        if isinstance(reply, Exception):
            raise reply
    now = now_ms()
    out = {}
    for i, stream in enumerate(streams):
        n = queues.depth(int(replies[3 * i]), replies[3 * i + 1], keys.GROUP)
        first = replies[3 * i + 2]
        age = 0.0
        if first:
            entry_id = first[0][0]
            entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            age = max(0.0, (now - int(entry_id.split("-")[0])) / 1000.0)
        out[stream] = (n, age)
    return out


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not news


def queue_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    """The queue gauges read from Redis at scrape time, empty (their depth, age, and Redis up)."""
    depth = GaugeMetricFamily(
        "stt_queue_depth", "Jobs in a stream not yet done (undelivered plus pending)", labels=["stream"]
    )
    age = GaugeMetricFamily(
        "stt_queue_oldest_age_seconds", "Age of the oldest job waiting in a stream", labels=["stream"]
    )
    up = GaugeMetricFamily("stt_redis_up", "Whether Redis answered this scrape")
    return depth, age, up


class QueueCollector(Collector):
    def __init__(self, redis_url: str) -> None:
        self._client = sync_client(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth, age, up = queue_families()
        try:
            for stream, (n, a) in stream_depths(self._client).items():
                depth.add_metric([stream], n)
                age.add_metric([stream], a)
            up.add_metric([], 1)
        except redis.RedisError as exc:
            logger.debug("scrape could not read Redis: %s", exc)
            up.add_metric([], 0)
        yield depth
        yield age
        yield up

    def close(self) -> None:
        close_client(self._client)


class DecoderMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decode_seconds = Histogram(
            "stt_decode_seconds", "Model time per decode call", ["kind"], buckets=DECODE_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "stt_decode_batch_size",
            "Jobs per decode call",
            ["kind"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=r,
        )
        self.queue_wait = Histogram(
            "stt_job_wait_seconds", "Time from enqueue to decode start", ["kind"], buckets=WAIT_BUCKETS, registry=r
        )
        self.rtf = Histogram(
            "stt_decode_rtf",
            "Decode time over audio duration",
            ["kind"],
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
            registry=r,
        )
        self.jobs = Counter("stt_jobs", "Jobs by outcome", ["kind", "outcome"], registry=r)
        self.info = Gauge(
            "stt_decoder_info", "This decoder's model", ["decoder", "model", "device", "compute_type"], registry=r
        )
        for kind in JobKind:
            for outcome in OUTCOMES:
                self.jobs.labels(kind, outcome)
            for family in (self.decode_seconds, self.batch_size, self.queue_wait, self.rtf):
                family.labels(kind)
        self._collector: QueueCollector | None = None
        self._server: Any = None
        self._metrics_app = make_wsgi_app(self.registry)
        self.not_ready: Callable[[], str | None] | None = None

    def serve(self, port: int, redis_url: str, host: str = "0.0.0.0") -> int:
        """Start the scrape endpoint (with /health and /ready for probes); returns the bound
        port (0 picks a free one)."""
        self._collector = QueueCollector(redis_url)
        self.registry.register(self._collector)
        server = make_server(host, port, self._app, ThreadingWSGIServer, handler_class=QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        self._server = server
        bound = int(server.server_address[1])
        logger.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path not in ("/health", "/ready"):
            served: Iterable[bytes] = self._metrics_app(environ, start_response)
            return served
        # Liveness: this thread answers. Readiness: the worker takes jobs (see not_ready).
        reason = self.not_ready() if path == "/ready" and self.not_ready is not None else None
        body = json.dumps({"ok": reason is None, **({"reason": reason} if reason else {})}).encode()
        status = "200 OK" if reason is None else "503 Service Unavailable"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._collector is not None:
            self._collector.close()
