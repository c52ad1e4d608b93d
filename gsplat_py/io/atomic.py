"""Atomic file writes: a crash or Ctrl-C leaves either the old file or the complete new one, never half.

The data go to a hidden temporary file in the target's folder (same file system, so the final rename is
atomic), which is flushed, fsync'ed and renamed over the target with ``os.replace``; on any failure the
temporary file is removed and an existing target is left untouched. :func:`atomic_open_all` replaces
several files together: all are written and synced before the first rename, so the files of one save are
only ever one rename apart.

A process killed while writing (SIGKILL, power loss) cannot remove its temporary file: it stays, named
``.<target name>.<12 hex digits>.tmp``, until :func:`remove_orphan_temporaries` removes it (the trainer
does at its next start). A failed write (disk full, read-only file system) raises an ``OSError`` whose
``filename`` is the target's path.

A folder of files that belong together (a COLMAP model) is written the same way by `atomic_directory`: it
is filled under a hidden temporary name beside the target and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

from .paths import PathLike

__all__ = [
    "atomic_directory",
    "atomic_open",
    "atomic_open_all",
    "remove_orphan_temporaries",
    "write_bytes_atomically",
    "write_text_atomically",
]

_TEMPORARY_NAME = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{12}\.tmp")


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
        except OSError as error:
            raise _naming(error, path) from None
        return fd, temporary
    raise FileExistsError(f"could not create a temporary file next to {path}")


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` as an OSError naming ``path`` (the target, not the temporary file)."""
    return OSError(error.errno, error.strerror or str(error), str(path))


class _TargetFile:
    """The temporary file of one target. Writes go through :meth:`write`, which remembers the first
    OSError: libraries that call ``write`` from C++ (``torch.save``) turn it into a RuntimeError that no
    longer says what went wrong."""

    def __init__(self, file: BinaryIO, target: Path):
        self._file = file
        self.name = str(target)
        self.target = target
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as error:
            self.error = self.error or _naming(error, self.target)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


@contextlib.contextmanager
def atomic_open_all(paths: Sequence[PathLike]) -> Iterator[list[BinaryIO]]:
    """Binary files to write the new contents of ``paths`` to, one each. When the block succeeds all of
    them are flushed and fsync'ed, then renamed over their targets in the order given; if it fails, or a
    write fails, no target is touched and the temporary files are removed."""
    targets = [Path(path) for path in paths]
    opened: list[tuple[_TargetFile, Path]] = []
    try:
        for target in targets:
            fd, temporary = _create_temp_next_to(target)
            opened.append((_TargetFile(os.fdopen(fd, "wb"), target), temporary))
        try:
            yield [cast(BinaryIO, file) for file, _ in opened]
            for file, _ in opened:
                file.flush()
                os.fsync(file.fileno())
                file.close()
        except OSError as error:
            raise (_first_write_error(opened, error) or error) from None
        except Exception:
            recorded = _first_write_error(opened, None)
            if recorded is None:
                raise
            raise recorded from None
        for file, temporary in opened:
            try:
                os.replace(temporary, file.target)
            except OSError as error:
                raise _naming(error, file.target) from None
    except BaseException:
        for file, temporary in opened:
            # Closing flushes what is still buffered: after a full disk that fails again, and must not
            # replace the error being raised (the file is discarded anyway; its descriptor is closed).
            with contextlib.suppress(OSError):
                file.close()
            temporary.unlink(missing_ok=True)
        raise


def _first_write_error(opened: list[tuple[_TargetFile, Path]], error: OSError | None) -> OSError | None:
    """The OSError to report: the first one a target's write recorded, else ``error`` (an operating-system
    error naming no file names the target when there is only one)."""
    for file, _ in opened:
        if file.error is not None:
            return file.error
    if error is not None and error.errno is not None and error.filename is None and len(opened) == 1:
        return _naming(error, opened[0][0].target)
    return error


@contextlib.contextmanager
def atomic_open(path: PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content to; it replaces ``path`` when the block succeeds."""
    with atomic_open_all([path]) as (file,):
        yield file


def write_bytes_atomically(path: PathLike, data: bytes) -> None:
    with atomic_open(path) as file:
        file.write(data)


def write_text_atomically(path: PathLike, text: str) -> None:
    write_bytes_atomically(path, text.encode("utf-8"))


def remove_orphan_temporaries(folder: PathLike, targets: Iterable[str] | None = None) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes left in ``folder`` (only those of the
    file names ``targets``, if given); returns their paths. Only call it when no other process is writing
    into ``folder``: its temporary files would be removed too."""
    folder = Path(folder)
    wanted = None if targets is None else set(targets)
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in folder.iterdir():
            match = _TEMPORARY_NAME.fullmatch(entry.name)
            if match and (wanted is None or match.group("target") in wanted) and entry.is_file():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


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
