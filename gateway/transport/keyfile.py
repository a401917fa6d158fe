"""API_KEYS_FILE: named API keys (tenants) and their limits, in TOML, one `[[key]]` table each.

    [[key]]
    name = "acme-voicebot"        # shown in logs and metrics; never the key itself
    sha256 = "9f86d081..."        # hex SHA-256 of the key (`printf %s KEY | sha256sum`)
    max_streams = 20              # live sessions at once, over every gateway
    max_files = 2                 # uploads in flight at once
    sessions_per_minute = 60      # new sessions per minute
    audio_seconds_per_day = 36000 # live and file audio per UTC day
    admin = false                 # may read every tenant's usage

A plain `key = "..."` is accepted in place of `sha256`, with a warning. A limit left out is no
limit. A file that does not parse, or a table that is wrong, is a `KeyFileError` naming its
line: at start the gateway exits 78; on a reload the last good file stays (gateway/transport/keyring.py).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass

from common.errors import SttError

LIMITS = ("max_streams", "max_files", "sessions_per_minute", "audio_seconds_per_day")
FIELDS = {"name", "sha256", "key", "admin", *LIMITS}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a metric label and a Redis key part
HEX = re.compile(r"^[0-9a-f]{64}$")


class KeyFileError(SttError):
    """API_KEYS_FILE cannot be used: it does not parse, or one of its tables is wrong."""


@dataclass(frozen=True)
class Tenant:
    name: str
    digest: bytes  # SHA-256 of the key
    max_streams: int | None = None
    max_files: int | None = None
    sessions_per_minute: int | None = None
    audio_seconds_per_day: int | None = None
    admin: bool = False

    def limit(self, name: str) -> int | None:
        value: int | None = getattr(self, name)
        return value


def key_lines(text: str) -> list[int]:
    """The line number of each `[[key]]` header, in order."""
    return [n for n, line in enumerate(text.splitlines(), 1) if re.match(r"^\s*\[\[\s*key\s*\]\]", line)]


def parse(text: str, source: str = "API_KEYS_FILE") -> tuple[list[Tenant], list[str]]:
    """The tenants of a keys file, and its warnings; KeyFileError naming the line when it is wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KeyFileError("%s does not parse: %s" % (source, exc)) from None
    unknown = set(doc) - {"key"}
    if unknown:
        raise KeyFileError("%s: unknown top-level entries %s (only [[key]] tables)" % (source, sorted(unknown)))
    tables = doc.get("key", [])
    if not isinstance(tables, list):
        raise KeyFileError("%s: `key` must be [[key]] tables" % source)
    lines = key_lines(text)
    tenants: list[Tenant] = []
    warnings: list[str] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for i, table in enumerate(tables):
        where = "%s line %d" % (source, lines[i] if i < len(lines) else 0)
        tenant, warning = _tenant(table, where)
        if tenant.name in names:
            raise KeyFileError("%s: the name %r is used twice" % (where, tenant.name))
        if tenant.digest in digests:
            raise KeyFileError("%s: the same key is given to two names" % where)
        names.add(tenant.name)
        digests.add(tenant.digest)
        tenants.append(tenant)
        if warning:
            warnings.append(warning)
    return tenants, warnings


def _tenant(table: dict[str, object], where: str) -> tuple[Tenant, str]:
    unknown = set(table) - FIELDS
    if unknown:
        raise KeyFileError("%s: unknown fields %s (known: %s)" % (where, sorted(unknown), ", ".join(sorted(FIELDS))))
    name = table.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise KeyFileError("%s: `name` must be 1-64 letters, digits, '.', '_' or '-'" % where)
    warning = ""
    if "sha256" in table and "key" in table:
        raise KeyFileError("%s (%s): give `sha256` or `key`, not both" % (where, name))
    if "sha256" in table:
        digest = table["sha256"]
        if not isinstance(digest, str) or not HEX.match(digest.lower()):
            raise KeyFileError("%s (%s): `sha256` must be 64 hex digits" % (where, name))
        raw = bytes.fromhex(digest)
    elif isinstance(table.get("key"), str) and table["key"]:
        raw = hashlib.sha256(str(table["key"]).encode()).digest()
        warning = "%s (%s): a plain `key`; store its sha256 instead" % (where, name)
    else:
        raise KeyFileError("%s (%s): `sha256` (or a plain `key`) is missing" % (where, name))
    limits: dict[str, int] = {}
    for field in LIMITS:
        if field in table:
            value = table[field]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise KeyFileError("%s (%s): `%s` must be a whole number, 0 or more" % (where, name, field))
            limits[field] = value
    admin = table.get("admin", False)
    if not isinstance(admin, bool):
        raise KeyFileError("%s (%s): `admin` must be true or false" % (where, name))
    return Tenant(name, raw, admin=admin, **limits), warning
