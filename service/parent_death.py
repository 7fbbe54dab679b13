"""Processes that die with their parent: the kernel's parent-death signal (Linux PR_SET_PDEATHSIG).

A child is tied to its parent either by calling parent_death_signal itself (a worker, once it
runs), or by being started through `tied_to_parent(argv)`: `python -m service.parent_death PID
ARGV...` asks for the signal and then execs ARGV, which keeps it across the exec. A preexec_fn would
do the same in fewer steps, but it makes subprocess fork() the whole parent and run its fork handlers
in the child; in a process with grpc's threads that aborted about one child in eight (40 OpenBao dev
servers started beside a grpc.aio server: 5 exited with SIGABRT before exec; none through this).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

_PR_SET_PDEATHSIG = 1
_PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def parent_death_signal(parent_pid: int) -> bool:
    """Have the kernel SIGTERM this process when `parent_pid` exits, even by SIGKILL; False where it cannot.

    The kernel watches the thread that started this process, so start it from the main thread.
    """
    if _PRCTL is None:
        return False
    if _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # it exited before the request above, so no signal will come
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def tied_to_parent(argv: Sequence[str]) -> list[str]:
    """The command that runs `argv` so that it gets SIGTERM when this process exits (`argv` itself where
    the platform has no parent-death signal). Start it from the main thread."""
    if _PRCTL is None:
        return list(argv)
    # -P: this package, as installed beside this Python, never a service/ directory where it runs.
    return [sys.executable, "-P", "-m", __name__, str(os.getpid()), *argv]


def _exec_tied(args: list[str]) -> NoReturn:
    parent_pid, *argv = args
    parent_death_signal(int(parent_pid))
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    _exec_tied(sys.argv[1:])
