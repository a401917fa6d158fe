"""API keys: who may open a session or read `/status` and `/metrics`.

`API_KEY` holds one key or several, comma-separated (add the new key, move clients over, drop
the old one). A client presents its key as `Authorization: Bearer <key>` or `?token=<key>`
(browsers cannot set headers on a WebSocket). Keys are compared in constant time, against every
key, so neither the match nor its position leaks through timing.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping


class ApiKeys:
    def __init__(self, spec: str) -> None:
        self._keys = [key.strip().encode() for key in spec.split(",")] if spec else []

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def accepts(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        if not self._keys:
            return True
        presented = presented_key(headers, query).encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        return matched


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return query.get("token", "")
