"""API keys: who may open a session or read `/status` and `/metrics`.

`API_KEY` holds one key or several, comma-separated (add the new key, move clients over, drop
the old one). A client presents its key as `Authorization: Bearer <key>` (Deepgram's SDK says
`Token <key>`), as `?token=<key>`, or, since browsers cannot set headers on a WebSocket, as a
subprotocol: OpenAI's `openai-insecure-api-key.<key>` (beside `realtime`) or Deepgram's pair
`token`, `<key>`. Which keys are accepted, and whose they are: gateway/transport/keyring.py.
"""

from __future__ import annotations

from collections.abc import Mapping

OPENAI_KEY_PROTOCOL = "openai-insecure-api-key."


def subprotocols(headers: Mapping[str, str]) -> list[str]:
    return [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("bearer", "token"):
        return value.strip()
    if "token" in query:
        return query["token"]
    offered = subprotocols(headers)
    for i, proto in enumerate(offered):
        if proto.startswith(OPENAI_KEY_PROTOCOL):
            return proto[len(OPENAI_KEY_PROTOCOL) :]
        if proto == "token" and i + 1 < len(offered):
            return offered[i + 1]
    return ""


def offered_subprotocol(headers: Mapping[str, str], name: str) -> str | None:
    """`name` when the client offered it as a subprotocol (the server must then choose it)."""
    return name if name in subprotocols(headers) else None
