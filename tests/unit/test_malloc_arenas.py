"""The malloc arena cap: threads of a serving process share two arenas, unless MALLOC_ARENA_MAX says otherwise."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from service.malloc_arenas import ARENAS, cap_malloc_arenas

# Eight threads, all alive at once (a thread that has exited hands its arena to the next), allocate
# from malloc (objects over pymalloc's 512 bytes); glibc's malloc_info reports one <heap> per arena.
_COUNT_ARENAS = textwrap.dedent(
    """
    import ctypes, re, sys, tempfile, threading
    from service.malloc_arenas import cap_malloc_arenas
    if sys.argv[1] == "cap":
        cap_malloc_arenas()
    held, together = [], threading.Barrier(8)
    def allocate():
        together.wait()
        held.append([bytes(2000) for _ in range(100)])
        together.wait()
    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile() as report:
        stream = libc.fopen(report.name.encode(), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        print(len(re.findall(rb"<heap nr=", report.read())))
    """
)

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


def _arenas_used(mode: str, **environ: str) -> int:
    env = {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"} | environ
    completed = subprocess.run(
        [sys.executable, "-c", _COUNT_ARENAS, mode], capture_output=True, text=True, check=True, env=env
    )
    return int(completed.stdout)


@glibc_only
def test_threads_of_a_capped_process_share_two_arenas() -> None:
    assert _arenas_used("default") > ARENAS
    assert _arenas_used("cap") == ARENAS


@glibc_only
def test_the_operators_malloc_arena_max_wins() -> None:
    assert cap_malloc_arenas({"MALLOC_ARENA_MAX": "4"}) is None
    assert _arenas_used("cap", MALLOC_ARENA_MAX="4") == 4
