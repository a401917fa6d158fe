"""API_KEYS_FILE alone: its tables, its errors (naming the line), who a key belongs to, and
reading it again when it changes (a broken file never opens the door)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from common.errors import ExitCode
from common.settings import Settings
from gateway import main as gateway_main
from gateway.transport.keyfile import KeyFileError, parse
from gateway.transport.keyring import KeyRing


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


GOOD = """
# two applications and an operator
[[key]]
name = "voicebot"
sha256 = "%s"
max_streams = 2
sessions_per_minute = 30

[[key]]
name = "notes"
key = "notes-secret"
max_files = 1
audio_seconds_per_day = 3600

[[key]]
name = "ops"
sha256 = "%s"
admin = true
""" % (sha("bot-secret"), sha("ops-secret").upper())


def test_a_keys_file_gives_each_key_its_name_and_limits_and_warns_of_plain_keys() -> None:
    tenants, warnings = parse(GOOD, "keys.toml")
    bot, notes, ops = tenants
    assert (bot.name, bot.max_streams, bot.sessions_per_minute, bot.max_files) == ("voicebot", 2, 30, None)
    assert bot.digest == hashlib.sha256(b"bot-secret").digest()
    assert (notes.max_files, notes.audio_seconds_per_day, notes.admin) == (1, 3600, False)
    assert ops.admin and ops.max_streams is None  # a limit left out is no limit
    assert warnings == ["keys.toml line 9 (notes): a plain `key`; store its sha256 instead"]
    assert parse("", "empty") == ([], [])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[[key]]\nname = "a"\nsha256 = "%s"\nmax_streams = "2"\n' % sha("x"), "line 1 (a): `max_streams` must be"),
        ('[[key]]\nname = "a"\nsha256 = "%s"\n\n[[key]]\nname = "b"\n' % sha("x"), "line 5 (b): `sha256`"),
        ('[[key]]\nname = "a"\nsha256 = "abc"\n', "`sha256` must be 64 hex digits"),
        ('[[key]]\nname = "a b"\nkey = "x"\n', "`name` must be"),
        ('[[key]]\nname = "a"\nkey = "x"\n[[key]]\nname = "a"\nkey = "y"\n', "line 4: the name 'a' is used twice"),
        ('[[key]]\nname = "a"\nkey = "x"\n[[key]]\nname = "b"\nkey = "x"\n', "the same key is given to two names"),
        ('[[key]]\nname = "a"\nkey = "x"\nmax_stream = 2\n', "unknown fields ['max_stream']"),
        ('[[key]]\nname = "a"\nkey = "x"\nadmin = 1\n', "`admin` must be true or false"),
        ('[[key]]\nname = "a"\nkey = "x"\nmax_files = -1\n', "`max_files` must be a whole number"),
        ('[[key]\nname = "a"\n', "does not parse"),
        ('title = "x"\n', "unknown top-level entries"),
    ],
)
def test_a_wrong_keys_file_is_refused_naming_the_line(text: str, says: str) -> None:
    with pytest.raises(KeyFileError) as err:
        parse(text, "keys.toml")
    assert says in str(err.value)


def test_a_key_belongs_to_its_tenant_an_api_key_to_nobody_and_others_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(GOOD)
    ring = KeyRing("plain-key", str(path))
    assert ring.identify({"authorization": "Bearer bot-secret"}, {}).name == "voicebot"  # type: ignore[union-attr]
    assert ring.identify({}, {"token": "notes-secret"}).name == "notes"  # type: ignore[union-attr]
    assert ring.identify({"authorization": "Token plain-key"}, {}).tenant is None  # type: ignore[union-attr]
    assert ring.identify({"authorization": "Bearer bot-secretx"}, {}) is None
    assert ring.identify({}, {}) is None
    assert KeyRing().identify({}, {}) is not None  # no keys at all: everyone comes in


def test_the_file_is_read_again_when_it_changes_and_a_broken_one_keeps_the_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(GOOD)
    ring = KeyRing("", str(path))
    assert not ring.reload()  # unchanged
    path.write_text('[[key]]\nname = "new"\nkey = "new-secret"\n')
    os.utime(path, ns=(1, 10**18))
    assert ring.reload() and [t.name for t in ring.tenants] == ["new"]
    assert ring.identify({"authorization": "Bearer bot-secret"}, {}) is None  # the old key is gone
    path.write_text('[[key]]\nname = "broken"\nsha256 = "nope"\n')
    os.utime(path, ns=(2, 2 * 10**18))
    with caplog.at_level(logging.ERROR):
        assert not ring.reload()
    assert "the keys read before stay in force" in caplog.text and "line 1" in caplog.text
    assert ring.identify({"authorization": "Bearer new-secret"}, {}) is not None
    assert ring.identify({"authorization": "Bearer anything"}, {}) is None  # never opens the door
    caplog.clear()
    assert not ring.reload() and caplog.text == ""  # said once per change


def test_a_gateway_whose_keys_file_is_wrong_does_not_start_exit_78(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[[key]]\nname = "a"\n')
    settings = Settings.from_env({"API_KEYS_FILE": str(path), "LOG_LEVEL": "ERROR"})
    assert gateway_main.run(settings) == ExitCode.CONFIG and int(ExitCode.CONFIG) == 78
    missing = settings.replace(API_KEYS_FILE=str(tmp_path / "nowhere.toml"))
    assert gateway_main.run(missing) == ExitCode.CONFIG
