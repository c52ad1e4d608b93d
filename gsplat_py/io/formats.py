"""The splat file formats gsplat_py reads and writes, by name and file name, and reading any of them.

    name            file name        written by                       metadata (the model's world frame)
    ply             *.ply            `gsplat_py.io.ply`               header comments
    compressed-ply  *.compressed.ply `gsplat_py.io.compressed_ply`    header comments
    spz             *.spz            `gsplat_py.io.spz`               none
    sog             *.sog, meta.json `gsplat_py.io.sog`               meta.json's asset.comments
    splat           *.splat          `gsplat_py.io.splat`             none

A ``.ply`` is read as a compressed PLY when its header declares the chunk layout, whatever its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..model import GaussianSplats
from .compressed_ply import is_compressed_ply, read_compressed_ply
from .packing import SplatFormatError
from .paths import PathLike
from .ply import read_ply, read_ply_comments
from .sog import META_FILE, read_sog, read_sog_comments
from .splat import read_splat
from .spz import read_spz

__all__ = [
    "SPLAT_FORMATS",
    "FORMAT_SUFFIXES",
    "RECORDS_METADATA",
    "SplatFile",
    "format_of_name",
    "read_splat_file",
]

# Each format's file name ending; the longest match wins (".compressed.ply" before ".ply").
FORMAT_SUFFIXES = {
    "ply": ".ply",
    "compressed-ply": ".compressed.ply",
    "spz": ".spz",
    "sog": ".sog",
    "splat": ".splat",
}
SPLAT_FORMATS = tuple(FORMAT_SUFFIXES)
# The formats that carry metadata lines (`gsplat_py.data.world_frame` records the world frame in them).
RECORDS_METADATA = ("ply", "compressed-ply", "sog")


@dataclass(frozen=True)
class SplatFile:
    """A splat file's Gaussians, its format, and its metadata lines (None for a format without any)."""

    splats: GaussianSplats
    file_format: str
    comments: list[str] | None


def format_of_name(path: PathLike) -> str | None:
    """The format a file name ends in (``meta.json``: an unbundled SOG), None for any other name."""
    name = Path(path).name.lower()
    if name == META_FILE:
        return "sog"
    endings = sorted(FORMAT_SUFFIXES.items(), key=lambda item: -len(item[1]))
    return next((file_format for file_format, suffix in endings if name.endswith(suffix)), None)


def read_splat_file(path: PathLike) -> SplatFile:
    """Read the splat file at ``path`` in the format its name says (a ``.ply`` in the layout its header
    declares). ValueError naming the file for a name of no format; each reader's errors otherwise."""
    file_format = format_of_name(path)
    if file_format in ("ply", "compressed-ply"):
        if is_compressed_ply(path):
            return SplatFile(read_compressed_ply(path), "compressed-ply", read_ply_comments(path))
        return SplatFile(read_ply(path), "ply", read_ply_comments(path))
    if file_format == "sog":
        return SplatFile(read_sog(path), "sog", read_sog_comments(path))
    if file_format == "spz":
        return SplatFile(read_spz(path), "spz", None)
    if file_format == "splat":
        return SplatFile(read_splat(path), "splat", None)
    suffixes = ", ".join(sorted(set(FORMAT_SUFFIXES.values()))) + f" or {META_FILE}"
    raise SplatFormatError(f"{path}: not a splat file name (expected {suffixes})")
