"""Figures of running processes from /proc: children, CPU time, memory, state, open files."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path


def children(pid: int) -> list[int]:
    """The direct children of a process (gunicorn's or uvicorn's workers, for its master),
    sorted; [] once it is gone. Every thread's list: a child may be forked by any of them."""
    found: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return []
    for tid in threads:
        try:
            found += (int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return sorted(set(found))


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used, from /proc/<pid>/stat.

    Raises FileNotFoundError (or ProcessLookupError) if the process is gone.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of these processes together; those gone count 0."""
    total = 0.0
    for pid in pids:
        try:
            total += sum(cpu_times(pid))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS) in kB, and Threads, from /proc/<pid>/status; {} once it is gone."""
    out = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def open_fds(pid: int) -> int:
    """How many file descriptors a process has open.

    Raises FileNotFoundError (or ProcessLookupError) if the process is gone.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


def process_state(pid: int) -> str | None:
    """The state letter of /proc/<pid>/stat (R, S, T stopped, Z zombie), None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rpartition(")")[2].split()[0]


def cmdline(pid: int) -> bytes:
    """A process's command line, NUL-separated; b"" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to a process unless it is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def priority(nice: int) -> Callable[[], None] | None:
    """A preexec_fn giving a child process (and its children) the scheduling priority ``nice``."""
    if nice == 0:
        return None
    return lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)
