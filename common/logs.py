"""Logging setup shared by every process."""

from __future__ import annotations

import logging
import re
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"
# API keys in query strings (uvicorn logs the request path) and passwords in Redis URLs.
_SECRETS = re.compile(r"(?i)(token=|password=|://[^/@:\s]*:)([^&@\s\"']+)")


def redact(text: str) -> str:
    """`text` with API keys and passwords replaced by ***."""
    return _SECRETS.sub(r"\1***", text) if ("=" in text or "@" in text) else text


class RedactSecrets(logging.Filter):
    """Keeps keys and passwords out of every log line, whoever logs them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def setup_logging(level: str = "INFO", *, process_name: str | None = None) -> None:
    if process_name:
        import multiprocessing

        multiprocessing.current_process().name = process_name
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactSecrets())
    root.addHandler(handler)
    root.setLevel(level)
    # faster-whisper logs every window at DEBUG and a progress line at INFO.
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, root.level))
    for noisy in ("uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
