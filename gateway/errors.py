"""Errors more than one part of the gateway raises or answers."""

from __future__ import annotations

from common.errors import SttError


class ResumeRefused(SttError):
    """A session cannot be resumed; `code` is the error code sent back (and picks the close
    code: common/protocol.py RESUME_CLOSE)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message
