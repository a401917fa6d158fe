"""Child processes: ones that cannot outlive the process that started them, what runs below a
process (from /proc, for `stt bench` and the benchmarks), the cores a process may use, and a
thread's priority."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, which a container's cpuset limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_lane(cores: int, lanes: int = 2) -> int:
    """CTranslate2 threads for each of a decoder's lanes (final, background) on `cores` cores: a
    share each, at most 4 (more only cost on small models)."""
    return max(1, min(4, cores // lanes))


def lower_thread_priority(nice: int) -> bool:
    """This thread at `nice` (Linux nice is per thread, and threads inherit it from the thread
    that starts them), never raised back; False where the system refuses."""
    if nice <= 0:
        return True
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
    except OSError:
        return False
    return True


def die_with_parent() -> None:
    """`preexec_fn` for children: own process group (a terminal's Ctrl-C reaches only the
    parent, which stops them in order) and, on Linux, SIGTERM if the parent dies first."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass


def descendants(pid: int) -> dict[int, str]:
    """Every live process below `pid`, with its command line (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc/%s/stat" % entry).read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent:
                try:
                    found[child] = Path("/proc/%d/cmdline" % child).read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue  # gone meanwhile
                todo.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 once it is gone)."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
