"""Stands in for PyAV on a GPU machine that lacks it (`scripts/gpu-check --wheels`): faster-whisper
imports `av` at import time only to read audio files, and the GPU check gives it arrays."""

from typing import NoReturn


def __getattr__(name: str) -> NoReturn:
    raise RuntimeError("PyAV is not installed here (gpu-check's stand-in): audio files cannot be read, only arrays")
