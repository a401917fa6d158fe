"""The private Redis of `stt up` and the tests: a unix socket in a 0700 directory, a password,
no TCP port, and an append-only file that a restart reads back."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import redis
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from common.redis_server import RedisServer


def test_only_its_owner_with_the_password_gets_in_and_a_restart_loses_nothing() -> None:
    with RedisServer() as server:
        assert stat.S_IMODE(os.stat(server.data_dir).st_mode) == 0o700
        assert server.proc is not None
        assert "requirepass" not in Path("/proc/%d/cmdline" % server.proc.pid).read_text().replace("\0", " ")
        client = redis.Redis.from_url(server.url)
        assert client.config_get("port") == {"port": "0"}  # no TCP listener at all
        client.set("kept", "yes")
        stranger = redis.Redis(unix_socket_path=server.socket_path)
        with pytest.raises((AuthenticationError, ResponseError, ConnectionError)):
            stranger.get("kept")
        client.close()
        stranger.close()
        server.stop()
        server.start()
        again = redis.Redis.from_url(server.url)
        assert again.get("kept") == b"yes"
        again.close()
