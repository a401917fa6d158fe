"""Who a caller is: its key checked against API_KEY's keys (unnamed, no limits) and
API_KEYS_FILE's tenants, in constant time against every key, so neither a match nor its position
leaks through timing. The file is read again when it changes (`reload`, polled by the gateway);
a file that no longer parses leaves the last good one in force and is logged, never opening the
door.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.transport.auth import presented_key
from gateway.transport.keyfile import KeyFileError, Tenant, parse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who opened a connection or sent a request: a tenant of the keys file, or None (an API_KEY
    key, or no keys at all)."""

    tenant: Tenant | None = None

    @property
    def name(self) -> str:
        return self.tenant.name if self.tenant else ""


ANONYMOUS = Caller()


class KeyRing:
    def __init__(self, api_key: str = "", path: str = "") -> None:
        self._plain = [key.strip().encode() for key in api_key.split(",")] if api_key else []
        self.path = path
        self.tenants: list[Tenant] = []
        self._seen: tuple[int, int] | None = None
        if path:
            self._load()  # KeyFileError at start: the gateway exits 78

    @property
    def enabled(self) -> bool:
        return bool(self._plain) or bool(self.path)

    def _stamp(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size

    def _load(self) -> None:
        try:
            stamp = self._stamp()
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise KeyFileError("API_KEYS_FILE %s cannot be read: %s" % (self.path, exc)) from None
        tenants, warnings = parse(text, "API_KEYS_FILE %s" % self.path)
        for warning in warnings:
            logger.warning("%s", warning)
        self.tenants, self._seen = tenants, stamp
        logger.info("API_KEYS_FILE %s: %d named keys", self.path, len(tenants))

    def reload(self) -> bool:
        """Read the file again if it changed; whether the keys now in force changed."""
        if not self.path:
            return False
        try:
            if self._stamp() == self._seen:
                return False
            self._load()
            return True
        except (KeyFileError, OSError) as exc:
            try:
                self._seen = self._stamp()  # said once per change, not every poll
            except OSError:
                pass
            logger.error("%s; the keys read before stay in force", exc)
            return False

    def identify(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Caller | None:
        """The caller presenting a key, or None when it may not come in."""
        if not self.enabled:
            return ANONYMOUS
        presented = presented_key(headers, query).encode()
        digest = hashlib.sha256(presented).digest()
        found: Tenant | None = None
        plain = False
        for key in self._plain:
            plain |= hmac.compare_digest(presented, key)
        for tenant in self.tenants:
            if hmac.compare_digest(digest, tenant.digest):
                found = tenant
        if found is not None:
            return Caller(found)
        return ANONYMOUS if plain and presented else None

    def accepts(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        return self.identify(headers, query) is not None
