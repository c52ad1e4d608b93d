"""Atomic file writes: a crash or Ctrl-C leaves either the old file or the complete new one, never half.

The data go to a hidden temporary file in the target's folder (same file system, so the final rename is
atomic), which is flushed, fsync'ed and renamed over the target with ``os.replace``; on any failure the
temporary file is removed and an existing target is left untouched.

A folder of files that belong together (a COLMAP model) is written the same way by `atomic_directory`: it
is filled under a hidden temporary name beside the target and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .paths import PathLike

__all__ = ["atomic_directory", "atomic_open", "write_bytes_atomically", "write_text_atomically"]


def _hidden_name_next_to(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.{kind}")


def _create_temp_next_to(path: Path) -> tuple[int, Path]:
    # Mode 0o666 so that the process umask applies, as it would to a plain open().
    for _ in range(100):
        temporary = _hidden_name_next_to(path, "tmp")
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


@contextlib.contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """An empty folder to fill with ``path``'s new content; it replaces ``path`` when the block succeeds.

    The folder is created next to ``path`` (parents are created). On success an existing ``path`` folder is
    renamed aside, the new one renamed into place and the old one deleted: an interruption between the two
    renames leaves no ``path`` but the old content under a hidden ``.NAME.*.old`` name. On any failure the
    new folder is deleted and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        temporary = _hidden_name_next_to(path, "tmp")
        try:
            temporary.mkdir(mode=0o777)  # the process umask applies, as to a plain mkdir
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"could not create a temporary folder next to {path}")
    try:
        yield temporary
        if path.exists():
            old = _hidden_name_next_to(path, "old")
            os.rename(path, old)
            os.rename(temporary, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
