"""The type of the file-system paths gsplat_py's functions accept, and the check every input file passes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

__all__ = ["PathLike", "input_file_problem"]

PathLike = Union[str, "os.PathLike[str]"]


def input_file_problem(path: PathLike, max_bytes: int | None = None) -> str | None:
    """Why ``path`` cannot be read as an input file, or None: it must be a regular file (a FIFO or a
    device such as /dev/zero would never end) of at most ``max_bytes`` bytes. The readers put the answer
    in their own one-line errors, after the path."""
    path = Path(path)
    try:
        status = path.stat()
    except FileNotFoundError:
        return "no such file"
    except OSError as error:
        return f"cannot read it: {error.strerror or error}"
    if path.is_dir():
        return "is a folder, not a file"
    if not path.is_file():
        return "not a regular file"
    if max_bytes is not None and status.st_size > max_bytes:
        return f"{status.st_size:,} bytes, more than the {max_bytes:,} such a file may have"
    return None
