"""Reading the small files an operator names (keys, tokens, certificates, the config) and stdin.

Each read is bounded and a path that is no regular file is refused at once, so that a mistyped or hostile
path (/dev/zero, a FIFO, a log) can neither hang the process nor fill its memory. Problems are OSErrors
with a `strerror` that says what was wrong, so the callers' existing handling names them.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

MAX_SMALL_FILE_BYTES = 1 << 20
"""Far more than any key, token, certificate chain or config this service reads."""


def read_small_file(path: str | Path, limit: int = MAX_SMALL_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Opened without blocking, so that a FIFO is
    refused rather than waited on for a writer."""
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return _at_most(file, limit)


def read_small_text(path: str | Path, limit: int = MAX_SMALL_FILE_BYTES) -> str:
    """`read_small_file` as UTF-8 text."""
    return _text(read_small_file(path, limit))


def read_small_stream(stream: BinaryIO, limit: int = MAX_SMALL_FILE_BYTES) -> str:
    """At most `limit` bytes of a stream (stdin), as UTF-8 text."""
    return _text(_at_most(stream, limit))


def _at_most(stream: BinaryIO, limit: int) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes")
    return data


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise OSError(errno.EILSEQ, "not UTF-8 text") from None
