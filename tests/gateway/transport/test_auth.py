"""Where a client's API key may be: every protocol's way of sending one."""

from __future__ import annotations

import pytest

from gateway.transport.auth import offered_subprotocol, presented_key
from gateway.transport.keyring import KeyRing


@pytest.mark.parametrize(
    ("headers", "query", "key"),
    [
        ({"authorization": "Bearer k1"}, {}, "k1"),
        ({"authorization": "bearer  k1 "}, {}, "k1"),
        ({"authorization": "Token k2"}, {}, "k2"),  # Deepgram's SDK
        ({}, {"token": "k3"}, "k3"),
        ({"sec-websocket-protocol": "realtime, openai-insecure-api-key.k4"}, {}, "k4"),  # OpenAI in a browser
        ({"sec-websocket-protocol": "token, k5"}, {}, "k5"),  # Deepgram in a browser
        ({"sec-websocket-protocol": "token"}, {}, ""),
        ({"authorization": "Basic k6"}, {}, ""),
        ({}, {}, ""),
    ],
)
def test_the_presented_key(headers: dict[str, str], query: dict[str, str], key: str) -> None:
    assert presented_key(headers, query) == key


def test_keys_rotate_and_blank_is_refused() -> None:
    keys = KeyRing("old-key,new-key")
    assert keys.accepts({"authorization": "Bearer new-key"}, {})
    assert keys.accepts({"sec-websocket-protocol": "token, old-key"}, {})
    assert not keys.accepts({"authorization": "Bearer new-keyx"}, {})
    assert not keys.accepts({}, {})
    assert KeyRing("").accepts({}, {})


def test_a_subprotocol_is_chosen_only_when_offered() -> None:
    assert (
        offered_subprotocol({"sec-websocket-protocol": "realtime, openai-insecure-api-key.k"}, "realtime") == "realtime"
    )
    assert offered_subprotocol({}, "realtime") is None
