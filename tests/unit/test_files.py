"""service.files: the small files and stdin an operator names are read bounded, and what is no regular
file is refused at once."""

from __future__ import annotations

import errno
import io
import os
import threading

import pytest

from service.files import read_small_file, read_small_stream, read_small_text


def test_a_small_file_is_read_whole(tmp_path):
    key = tmp_path / "key"
    key.write_bytes(b"s3cret\n")
    assert read_small_file(key) == b"s3cret\n"
    assert read_small_text(key) == "s3cret\n"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = threading.Event()

    def read() -> None:
        with pytest.raises(OSError, match="not a regular file"):
            read_small_file(fifo)
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert done.wait(5), "the read of a FIFO without a writer blocked"


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/"])
def test_devices_and_directories_are_refused(path):
    with pytest.raises(OSError) as refused:
        read_small_file(path)
    assert refused.value.errno in (errno.EINVAL, errno.EISDIR)


def test_a_file_over_the_limit_is_refused_after_reading_one_byte_more(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    assert read_small_file(big, limit=101) == b"x" * 101
    with pytest.raises(OSError, match="larger than 100 bytes") as refused:
        read_small_file(big, limit=100)
    assert refused.value.errno == errno.EFBIG


def test_text_must_be_utf8(tmp_path):
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(OSError, match="not UTF-8 text"):
        read_small_text(binary)
    with pytest.raises(OSError, match="not UTF-8 text"):
        read_small_stream(io.BytesIO(b"\xc3"))


def test_a_stream_is_read_up_to_its_limit():
    assert read_small_stream(io.BytesIO(b"tok.en.sig\n")) == "tok.en.sig\n"
    with pytest.raises(OSError, match="larger than 4 bytes"):
        read_small_stream(io.BytesIO(b"12345"), limit=4)
