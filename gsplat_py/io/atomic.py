"""Atomic file writes: a crash or Ctrl-C leaves either the old file or the complete new one, never half.

The data go to a hidden temporary file in the target's folder (same file system, so the final rename is
atomic), which is flushed, fsync'ed and renamed over the target with ``os.replace``; on any failure the
temporary file is removed and an existing target is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .paths import PathLike

__all__ = ["atomic_open", "write_bytes_atomically", "write_text_atomically"]


def _create_temp_next_to(path: Path) -> tuple[int, Path]:
    # Mode 0o666 so that the process umask applies, as it would to a plain open().
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return fd, temporary
    raise FileExistsError(f"could not create a temporary file next to {path}")


@contextlib.contextmanager
def atomic_open(path: PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content to; it replaces ``path`` when the block succeeds."""
    path = Path(path)
    fd, temporary = _create_temp_next_to(path)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path: PathLike, data: bytes) -> None:
    with atomic_open(path) as file:
        file.write(data)


def write_text_atomically(path: PathLike, text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))
