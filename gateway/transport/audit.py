"""The audit log: one JSON line per session (per connection that served it) and per file, at its
end: tenant, protocol, id, start, end, audio seconds, finals, how it ended, the client's address.
Never the audio, the text or the key. To AUDIT_LOG (a file, rotated at AUDIT_LOG_MAX_MB, five
kept), or to stdout when it is empty; `off`: none."""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import sys
from typing import Any

MB = 1 << 20
KEEP = 5


def iso(wall_s: float) -> str:
    return datetime.datetime.fromtimestamp(wall_s, datetime.UTC).isoformat(timespec="milliseconds")


class AuditLog:
    def __init__(self, path: str, max_mb: float, name: str = "stt.audit") -> None:
        self.logger = logging.getLogger(name)
        self.logger.propagate = False  # its own lines, not the service's log
        self.logger.setLevel(logging.INFO)
        for old in list(self.logger.handlers):
            self.logger.removeHandler(old)
            old.close()
        self.enabled = path != "off"
        if not self.enabled:
            return
        handler: logging.Handler
        if path:
            handler = logging.handlers.RotatingFileHandler(path, maxBytes=int(max_mb * MB), backupCount=KEEP)
        else:
            handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger.addHandler(handler)

    def record(self, event: str, start_s: float, end_s: float, **fields: Any) -> None:
        if not self.enabled:
            return
        line = {"event": event, "start": iso(start_s), "end": iso(end_s), **fields}
        self.logger.info(json.dumps(line, separators=(",", ":"), sort_keys=False))

    def close(self) -> None:
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)
