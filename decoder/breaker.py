"""A circuit breaker on device errors: a GPU whose CUDA context is broken (a sticky error: an
illegal address, a lost device, an ECC error) fails every job after it, while the decoder's
heartbeat still says all is well. Consecutive device errors, LIMIT of them, mean the device, not
the jobs: the decoder stops saying ready, leaves its jobs to the others and exits for its
supervisor to restart it on a fresh context (decoder/worker.py does that; this only decides).

A device error never becomes a job's failed result: the job is left unacknowledged, and another
decoder (or this one, restarted) claims it once it has been idle CLAIM_IDLE_MS. MAX_DELIVERIES
still bounds a job that breaks every device it meets.
"""

from __future__ import annotations

import enum
import re

LIMIT = 3  # one error can be the job's (an odd shape, a batch too big): three in a row are not

# What CUDA, cuBLAS and CTranslate2's CUDA code say when the device, not the input, failed.
DEVICE_ERROR = re.compile(
    r"cuda|cublas|cudnn|illegal (memory )?access|device-side assert|ecc error|launch failure|"
    r"unspecified launch|device (is )?(lost|unavailable)|misaligned address",
    re.IGNORECASE,
)


class Verdict(enum.Enum):
    OK = "ok"  # not a device error: the job's result (even a failure) goes to its gateway
    LEAVE = "leave"  # a device error: leave the job to another decoder
    TRIP = "trip"  # and that was one too many: stop, and exit to be restarted


def is_device_error(text: str) -> bool:
    return bool(DEVICE_ERROR.search(text))


class DeviceBreaker:
    def __init__(self, on_device: bool, limit: int = LIMIT) -> None:
        self.on_device = on_device  # a CPU has no device to lose: its errors are the jobs'
        self.limit = limit
        self.streak = 0
        self.tripped: str | None = None  # why, once tripped

    def record(self, error: str | None) -> Verdict:
        """One job's outcome: None when it decoded, else its error's text."""
        if error is None:
            self.streak = 0  # the device works
            return Verdict.OK
        if not self.on_device or not is_device_error(error):
            return Verdict.OK
        self.streak += 1
        if self.streak >= self.limit and self.tripped is None:
            self.tripped = "%d device errors in a row, the last: %s" % (self.streak, error.strip().splitlines()[0])
        return Verdict.TRIP if self.tripped else Verdict.LEAVE
