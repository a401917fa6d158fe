"""`stt up`: the whole service on one machine.

Redis from REDIS_URL, else a private redis-server on a unix socket in its own 0700 directory,
with a random password and an append-only file; DECODERS decoder processes (0: one per visible
GPU, else CPU_DECODERS on the CPU) and one gateway on PORT, bound to loopback unless HOST says otherwise.
A child that dies (Redis too) is restarted with backoff. SIGINT/SIGTERM stop the
gateway (it drains its sessions), then the decoders (each finishes its batch), then Redis, and
leave no process behind; children are in their own process group (so a terminal's Ctrl-C
reaches only this process, which stops them in that order) and die with it if it is killed.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from common.backoff import Backoff
from common.errors import ExitCode, SttError
from common.lifecycle import StopFlag
from common.logs import setup_logging
from common.process import die_with_parent, threads_per_lane, usable_cores
from common.redis_server import RedisServer
from common.settings import Settings
from decoder.devices import DeviceError, Placement, cuda_count, nvidia_smi, placements
from decoder.memory import decoders_per_gpu
from decoder.models import BUNDLED_NAME

logger = logging.getLogger(__name__)

# A child exiting with one of these before the service was ever ready will fail the same way
# again: stop instead of restarting it forever.
HOPELESS: dict[int, str] = {
    ExitCode.CONFIG: "a bad setting",
    ExitCode.UNAVAILABLE: "a model or service it needs is unavailable",
}
STABLE_S = 60.0  # a child up this long has its backoff reset


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(first=0.5, cap=30.0))
    next_start: float = 0.0
    started_at: float = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stt", *self.args], env=self.env, preexec_fn=die_with_parent
        )
        self.started_at = time.monotonic()
        logger.info("started %s (pid %d)", self.name, self.proc.pid)

    def stop(self, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
            self.proc.kill()
            self.proc.wait()
        logger.info("%s stopped (exit %s)", self.name, self.proc.returncode)


def decoder_plan(settings: Settings, gpus: int | None = None) -> list[Placement]:
    """Where each decoder runs (decoder/devices.py): on each visible GPU as many as its memory
    holds for the model (at most 4), or DECODERS spread over them, a set DEVICE_INDEX pinned; on a
    CPU, CPU_DECODERS, because two decoders there (two finals decoded at once) hold a 1.5 s p95
    for 6 streams where one holds 1. DeviceError when DEVICE=cuda finds no GPU."""
    gpus = cuda_count() if gpus is None else gpus
    per_gpu = 1
    if gpus and not settings.DECODERS and settings.DEVICE != "cpu":
        memory = gpu_memory_mb()
        per_gpu = decoders_per_gpu(
            settings.MODEL_NAME,
            settings.COMPUTE_TYPE,
            settings.DECODE_BATCH,
            settings.FINAL_BEAM,
            min(memory) if memory else None,
        )
    return placements(settings, gpus, per_gpu)


def gpu_memory_mb() -> list[int]:
    """Each visible GPU's memory; [] where it cannot tell."""
    return [int(row[0]) for row in nvidia_smi("memory.total") if row and row[0].isdigit()]


def decoder_env(settings: Settings, i: int, plan: list[Placement]) -> dict[str, str]:
    """What decoder i gets beside the common environment: its device and GPU, id, metrics port
    and, on a CPU, its share of the cores (a thread per lane per two cores it has) unless
    CPU_THREADS says otherwise."""
    place = plan[i]
    env = {
        "DEVICE": place.device,
        "DEVICE_INDEX": str(place.index),
        "DECODER_ID": "%s-%d" % (settings.decoder_id, i),
        "METRICS_PORT": str(settings.METRICS_PORT + i if settings.METRICS_PORT else 0),
    }
    if settings.DEVICE == "auto":
        # The decoder itself decides again (and falls back to the CPU if the GPU cannot be used).
        env["DEVICE"] = "auto"
    if place.device == "cpu" and not settings.CPU_THREADS:
        env["CPU_THREADS"] = str(threads_per_lane(usable_cores() // len(plan)))
    return env


def gateway_status(host: str, port: int, key: str = "") -> dict[str, Any] | None:
    """The gateway's /status once its /ready says yes; None until then. Behind an API key this
    process lacks (API_KEYS_FILE holds digests only), ready with its models unknown."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", "/ready")
        ready = conn.getresponse()
        ready.read()
        if ready.status != 200:
            return None
        conn.request("GET", "/status", headers={"Authorization": "Bearer %s" % key} if key else {})
        answer = conn.getresponse()
        raw = answer.read()
        if answer.status == 401:
            return {"decoders": [{"model": "(its /status needs an API key)", "device": "?", "compute_type": "?"}]}
        body: dict[str, Any] = json.loads(raw)
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return body if body.get("decoders") else None


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = StopFlag()
        self.redis: RedisServer | None = None
        self.redis_restarts = 0
        self.redis_backoff = Backoff(first=0.2, cap=5.0)
        self.redis_next_start = 0.0
        self.children: list[Child] = []
        self.gateways: list[Child] = []
        self.ready = False
        self.exit_code = ExitCode.OK
        self.no_room: list[Child] = []  # decoders whose model did not fit on their GPU

    def on_signal(self, signum: int, _frame: object) -> None:
        self.stop.request()

    def run(self) -> int:
        s = self.settings
        try:
            plan = decoder_plan(s)
        except DeviceError as exc:
            logger.error("%s", exc)
            print("stt up: %s" % exc, file=sys.stderr, flush=True)
            return ExitCode.UNAVAILABLE
        url = s.REDIS_URL
        if not url:
            try:
                self.redis = RedisServer().start()
            except SttError as exc:
                logger.error("%s", exc)
                return ExitCode.UNAVAILABLE
            url = self.redis.url
            print(
                "stt up: private redis-server on %s (its password in %s)"
                % (self.redis.socket_path, self.redis.password_path),
                flush=True,
            )
        env = {**os.environ, **s.to_env(), "REDIS_URL": url}
        n = len(plan)
        gpu = plan[0].device == "cuda"
        for i in range(n):
            self.children.append(Child("decoder-%d" % i, ["decoder"], {**env, **decoder_env(s, i, plan)}))
        for i in range(s.GATEWAYS):
            gw_env = env if s.GATEWAYS == 1 else {**env, "GATEWAY_ID": "%s-%d" % (s.gateway_id, i)}
            gateway = Child("gateway" if s.GATEWAYS == 1 else "gateway-%d" % i, ["gateway"], gw_env)
            self.gateways.append(gateway)
            self.children.append(gateway)
        model = (
            s.MODEL_NAME
            if s.is_set("MODEL_NAME")
            else "%s (the default; the bundled %s if %s cannot be had)" % (s.MODEL_NAME, BUNDLED_NAME, s.MODEL_NAME)
        )
        print(
            "stt up: %d decoder(s) loading model %s on %s; gateway on ws://%s:%d/v1/listen"
            % (n, model, "GPU " + ",".join(str(p.index) for p in plan) if gpu else "CPU", s.HOST, s.PORT),
            flush=True,
        )
        try:
            for child in self.children:
                child.start()
            while not self.stop.requested and self.exit_code == ExitCode.OK:
                self._watch()
                time.sleep(0.2)
        finally:
            self._stop_all()
        return self.exit_code

    def _watch_redis(self) -> None:
        """The private Redis is a child like the others: restarted with backoff on the same
        socket, password and data directory (its AOF brings back what it had acknowledged);
        gateways and decoders reconnect by themselves."""
        redis = self.redis
        if redis is None or (redis.proc is not None and redis.proc.poll() is None):
            return
        now = time.monotonic()
        if redis.proc is not None:
            logger.error("redis-server exited with %s; restarting it", redis.proc.returncode)
            redis.proc = None
            self.redis_restarts += 1
            self.redis_next_start = now
        if now < self.redis_next_start:
            return
        try:
            redis.start()
            logger.info("redis-server restarted (restart %d)", self.redis_restarts)
            self.redis_backoff.reset()
        except SttError as exc:
            redis.proc = None
            delay = self.redis_backoff.next()
            logger.error("redis-server did not come back (%s); trying again in %.1fs", exc, delay)
            self.redis_next_start = now + delay

    def _watch(self) -> None:
        self._watch_redis()
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                code = child.proc.returncode
                child.proc = None
                if code == ExitCode.NO_DEVICE_MEMORY:
                    self._no_room(child)
                    continue
                if not self.ready and code in HOPELESS:
                    logger.error(
                        "%s exited with %d (%s) before the service was ever ready; stopping",
                        child.name,
                        code,
                        HOPELESS[code],
                    )
                    self.exit_code = ExitCode(code)
                    return
                if now - child.started_at > STABLE_S:
                    child.backoff.reset()
                delay = child.backoff.next()
                child.restarts += 1
                logger.error(
                    "%s exited with %s; restarting it in %.1fs (restart %d)", child.name, code, delay, child.restarts
                )
                child.next_start = now + delay
            elif child.proc is None and now >= child.next_start and child not in self.no_room:
                child.start()
        if not self.ready:
            status = gateway_status(self.settings.HOST, self.settings.PORT, self.settings.API_KEY.split(",")[0])
            if status is not None:
                self.ready = True
                models = sorted(
                    {
                        "%s on %s (%s)" % (d.get("model"), d.get("device"), d.get("compute_type"))
                        for d in status["decoders"]
                    }
                )
                print(
                    "stt up: ready; model %s; clients connect to ws://%s:%d/v1/listen"
                    % (", ".join(models), self.settings.HOST, self.settings.PORT),
                    flush=True,
                )

    def _no_room(self, child: Child) -> None:
        """A decoder whose model does not fit in its GPU's free memory: said, and not restarted
        (the card fills the same way again); the ones that fit serve. None fitting stops all."""
        self.no_room.append(child)
        decoders = [c for c in self.children if c.name.startswith("decoder")]
        fit = len(decoders) - len(self.no_room)
        message = "%s does not fit in its GPU's memory and is not restarted: %d of %d decoders fit%s" % (
            child.name,
            fit,
            len(decoders),
            "; set DECODERS=%d" % fit if fit else "; none can serve: a smaller MODEL_NAME or COMPUTE_TYPE",
        )
        logger.error("%s", message)
        print("stt up: %s" % message, file=sys.stderr, flush=True)
        if not fit:
            self.exit_code = ExitCode.NO_DEVICE_MEMORY

    def _stop_all(self) -> None:
        timeout = self.settings.SHUTDOWN_TIMEOUT_S + 5
        logger.info("stopping: gateways, then decoders, then Redis")
        for gateway in self.gateways:
            gateway.stop(timeout)
        for child in self.children:
            child.stop(timeout)
        if self.redis is not None:
            self.redis.cleanup()
        print("stt up: stopped", flush=True)


def run(settings: Settings) -> int:
    setup_logging(settings.LOG_LEVEL, process_name="stt-up")
    if not settings.is_set("HOST"):
        # One machine, one user: nothing outside it reaches the service unless asked for.
        settings = settings.replace(HOST="127.0.0.1")
    sup = Supervisor(settings)
    signal.signal(signal.SIGINT, sup.on_signal)
    signal.signal(signal.SIGTERM, sup.on_signal)
    return sup.run()
