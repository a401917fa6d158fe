"""The examples run against `stt up` as a real process tree (the command line's fixture)."""

from tests.stt.conftest import stt_up

__all__ = ["stt_up"]
