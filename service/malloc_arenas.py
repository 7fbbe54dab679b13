"""How many glibc malloc arenas a serving process may make: two, unless the operator chose.

glibc gives each new thread an arena of its own, up to eight per core, and an arena's freed pages
mostly stay mapped. grpc-core's threads allocate what a flood of peers sends, so under
tests/bench/hostile.py (4,000 uncredentialed streams re-opened every 5 s, refused batches beside
them) a worker grew by 50.3 MiB and stayed at 107 MiB after the flood; with two arenas it grew by
32.3 MiB and was at 86-94 MiB after (2026-12-03, one worker, 2 cores). `MALLOC_ARENA_MAX` in the
environment is glibc's own setting and wins: it is read before any Python runs, so this leaves it alone.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def cap_malloc_arenas(environ: Mapping[str, str] | None = None) -> int | None:
    """Cap this process's malloc arenas at ARENAS, before its threads start; the cap set, or None.

    None means nothing was changed: the environment sets MALLOC_ARENA_MAX, or the C library is not
    glibc (musl has no arenas to cap).
    """
    environ = os.environ if environ is None else environ
    if "MALLOC_ARENA_MAX" in environ:
        return None
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None or mallopt(_M_ARENA_MAX, ARENAS) != 1:
        return None
    return ARENAS
