"""`stt up`: the whole service on one machine.

Redis from REDIS_URL, else a private redis-server on a free loopback port; DECODERS decoder
processes (0: one per visible GPU, else one on the CPU) and one gateway on PORT. A child that
dies is restarted with backoff; SIGINT/SIGTERM stop the gateway, then the decoders (each drains),
then Redis, and leave no process behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from common.errors import ExitCode, SttError
from common.logs import setup_logging
from common.redis_server import RedisServer
from common.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "stt", *self.args], env=self.env)
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


def decoder_count(settings: Settings) -> tuple[int, bool]:
    if settings.DECODERS:
        return settings.DECODERS, settings.DEVICE != "cpu"
    if settings.DEVICE == "cpu":
        return 1, False
    import ctranslate2

    gpus = ctranslate2.get_cuda_device_count()
    return (gpus, True) if gpus else (1, False)


def run(settings: Settings) -> int:
    setup_logging(settings.LOG_LEVEL, process_name="stt-up")
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    redis = None
    if not settings.REDIS_URL:
        try:
            redis = RedisServer().start()
        except SttError as exc:
            logger.error("%s", exc)
            return ExitCode.UNAVAILABLE
    url = settings.REDIS_URL or redis.url  # type: ignore[union-attr]
    base_env = {**os.environ, **settings.to_env(), "REDIS_URL": url}
    n, gpu = decoder_count(settings)
    children = [Child("decoder-%d" % i, ["decoder"], {**base_env, "DEVICE_INDEX": str(i if gpu else 0),
                      "METRICS_PORT": str(settings.METRICS_PORT + i if settings.METRICS_PORT else 0)})
                for i in range(n)]
    gateway = Child("gateway", ["gateway"], base_env)
    children.append(gateway)
    print("stt up: Redis %s, %d decoder(s) with model %s, gateway on ws://%s:%d/v1/listen"
          % (url, n, settings.MODEL_NAME, settings.HOST, settings.PORT), flush=True)
    for child in children:
        child.start()
    try:
        while not stopping:
            now = time.monotonic()
            for child in children:
                if child.proc is not None and child.proc.poll() is not None:
                    code = child.proc.returncode
                    child.restarts += 1
                    delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
                    if now - child.started_at > 60:
                        child.restarts, delay = 0, 0.5
                    logger.error("%s exited with %s; restarting in %.1fs", child.name, code, delay)
                    child.proc = None
                    child.next_start = now + delay
                elif child.proc is None and now >= child.next_start:
                    child.start()
            time.sleep(0.2)
    finally:
        logger.info("stopping: gateway, then decoders, then Redis")
        gateway.stop(settings.SHUTDOWN_TIMEOUT_S + 5)
        for child in children[:-1]:
            child.stop(settings.SHUTDOWN_TIMEOUT_S + 5)
        if redis is not None:
            redis.cleanup()
    return ExitCode.OK
