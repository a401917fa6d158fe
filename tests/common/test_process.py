"""A thread's priority: lowered for that thread alone, never raised back."""

from __future__ import annotations

import os
import threading

from common.process import lower_thread_priority


def test_a_thread_is_lowered_alone_and_never_raised() -> None:
    seen: list[tuple[bool, int, bool, int]] = []

    def run() -> None:
        tid = threading.get_native_id()
        lowered = lower_thread_priority(7)
        after = os.getpriority(os.PRIO_PROCESS, tid)
        again = lower_thread_priority(3)  # less nice than it is: left at 7
        seen.append((lowered, after, again, os.getpriority(os.PRIO_PROCESS, tid)))

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [(True, max(7, before), True, max(7, before))]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
