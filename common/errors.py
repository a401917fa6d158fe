"""Typed errors and the process exit codes every entry point uses."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    UNAVAILABLE = 69  # EX_UNAVAILABLE: a service it needs (Redis, a model) cannot be had
    SOFTWARE = 70  # EX_SOFTWARE: an internal error
    NO_DEVICE_MEMORY = 71  # a decoder's model does not fit in its GPU's free memory: not restarted
    DEVICE_FAILED = 74  # EX_IOERR: the GPU failed job after job; restart for a fresh context
    CONFIG = 78  # EX_CONFIG: a bad setting
    INTERRUPTED = 130


class SttError(Exception):
    """Base of every error this project raises on purpose."""


class SettingsError(SttError):
    def __init__(self, name: str, value: object, problem: str) -> None:
        super().__init__("%s=%r %s" % (name, value, problem))
        self.name = name


class SchemaError(SttError):
    """A job or result that cannot be decoded: not msgpack, wrong version, missing fields."""


class AudioError(SttError):
    """A job's audio cannot be read: missing key, empty or truncated range."""


class AudioMissing(AudioError):
    """A job's audio key is missing or shorter than the job's range: not written yet, as far as
    Redis knows (after a failover the promoted replica may lack the newest appends)."""


class DecodeError(SttError):
    """The model call failed for a job."""


class ModelLoadError(SttError):
    """The model could not be loaded."""


class DeviceMemoryError(ModelLoadError):
    """The model does not fit in what is left of its GPU's memory (too many decoders on it)."""
