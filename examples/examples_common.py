"""What both example scripts share: their command line, the WAV they stream, and the gateway's
addresses (each script runs with this directory first on its path)."""

from __future__ import annotations

import argparse
import wave


def arguments(doc: str | None, option: str, default: str) -> argparse.Namespace:
    """The WAV, the gateway, its key, and which of the framework's plugins to run."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("wav")
    p.add_argument("--url", default="http://localhost:8000", help="the gateway")
    p.add_argument("--api-key", default="unused", help="the gateway's API key (any string without one)")
    p.add_argument("--" + option, default=default)
    return p.parse_args()


def read_wav(path: str) -> tuple[bytes, int]:
    """PCM16 mono frames of a WAV file, and its rate."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise SystemExit("%s: a 16-bit mono WAV is needed" % path)
        return w.readframes(w.getnframes()), w.getframerate()


def addresses(url: str) -> tuple[str, str]:
    """The gateway's HTTP address and its WebSocket one (no trailing slash)."""
    host = url.rstrip("/")
    return host, host.replace("http://", "ws://").replace("https://", "wss://")
