"""Exporting a saved model for other tools, in any format of `gsplat_py.io.formats`:

- ``ply``: the Inria layout of `gsplat_py.io.ply` (float32, lossless), with the world frame recorded in the
  header (`gsplat_py.saved_models`), so that ``gsplat-py render`` puts cameras in the right place.
- ``compressed-ply``: SuperSplat / PlayCanvas's chunked PLY (`gsplat_py.io.compressed_ply`), frame in the
  header; about 4x smaller than the PLY at SH degree 3.
- ``spz``: Niantic's SPZ (`gsplat_py.io.spz`), version 4 (zstd, the optional zstandard package) or 3 (gzip);
  no place for the frame.
- ``sog``: PlayCanvas's SOG bundle (`gsplat_py.io.sog`), frame in meta.json.
- ``splat``: the 32-byte records of `gsplat_py.io.splat` (view-dependent colour dropped, no frame).

The model is written at its SH degree (a checkpoint's is the degree it was trained to), or cut to a lower
``sh_degree``. ``frame`` moves the Gaussians into another world frame first
(`gsplat_py.frames.transform_splats`: means, rotations, scales and the SH bands all move): "colmap" to line
up with the COLMAP reconstruction and with models trained by other implementations, "normalized" for
gsplat_py's normalisation of the scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from .._version import __version__
from ..data.world_frame import FRAME_NAMES, WorldFrame, frame_comments
from ..errors import ParameterError
from ..io.compressed_ply import write_compressed_ply
from ..io.formats import FORMAT_SUFFIXES, RECORDS_METADATA, SPLAT_FORMATS, format_of_name
from ..io.ply import ply_file_size, write_ply
from ..io.sog import MAX_PALETTE, write_sog
from ..io.splat import write_splat
from ..io.spz import SPZ_VERSION, SPZ_WRITE_VERSIONS, write_spz
from ..model import GaussianSplats, model_type_comments
from ..training.checkpoint import PLY_FILE
from .frames import frame_change, transform_splats
from .saved_models import SavedModel, default_frame_name, scene_normalization

__all__ = [
    "EXPORT_FORMATS",
    "frame_move",
    "splats_in_frame",
    "export_format",
    "default_export_path",
    "export_model",
    "ExportSummary",
]

EXPORT_FORMATS = SPLAT_FORMATS


def frame_move(
    model: SavedModel,
    frame: str | None = None,
    data: Path | None = None,
    data_factor: int | None = None,
) -> tuple[Tensor | None, WorldFrame]:
    """The similarity that moves the model's content into the world frame named ``frame`` (None: no move;
    default: the model's own frame) and that frame. A normalisation the model does not record comes from
    its scene (``data``, else its run's)."""
    if frame is None or frame == model.frame.name:
        return None, model.frame
    if frame not in FRAME_NAMES:
        raise ParameterError("frame", f"expected one of {', '.join(FRAME_NAMES)}, got {frame!r}")
    normalization = scene_normalization(model, data, data_factor, need=f"exporting in the {frame} frame")
    source = model.frame if model.frame.from_colmap is not None else WorldFrame.normalized(normalization)
    target = WorldFrame.colmap() if frame == "colmap" else WorldFrame.normalized(normalization)
    return frame_change(source, target, str(model.source)), target


def splats_in_frame(
    model: SavedModel,
    frame: str | None = None,
    data: Path | None = None,
    data_factor: int | None = None,
) -> tuple[GaussianSplats, WorldFrame]:
    """The model's Gaussians in the world frame named ``frame`` (default: the model's own) and that frame
    (`frame_move`)."""
    change, target = frame_move(model, frame, data, data_factor)
    return (model.splats if change is None else transform_splats(model.splats, change)), target


def export_format(file_format: str | None, output: Path | None) -> str:
    """``file_format``, else the format ``output``'s name ends in; ParameterError naming ``file_format``
    when neither gives one."""
    if file_format is not None:
        if file_format not in EXPORT_FORMATS:
            raise ParameterError(
                "file_format", f"expected one of {', '.join(EXPORT_FORMATS)}, got {file_format!r}"
            )
        return file_format
    named = format_of_name(output) if output is not None else None
    if named is None:
        endings = ", ".join(FORMAT_SUFFIXES[name] for name in EXPORT_FORMATS)
        raise ParameterError(
            "file_format", f"give one of {', '.join(EXPORT_FORMATS)} (or an {{output}} ending in {endings})"
        )
    return named


def default_export_path(model: SavedModel, file_format: str, frame: WorldFrame) -> Path:
    """RUN/point_cloud_<frame><suffix> for a training run, else <folder>/<file stem>_<frame><suffix> beside
    the model's file (the suffix of `gsplat_py.io.formats.FORMAT_SUFFIXES`)."""
    if model.run is not None:
        stem, folder = Path(PLY_FILE).stem, model.run
    else:
        named = format_of_name(model.source)
        suffix = FORMAT_SUFFIXES[named] if named is not None else model.source.suffix
        name = model.source.name
        stem = name[: -len(suffix)] if name.lower().endswith(suffix) else model.source.stem
        folder = model.source.parent
    return folder / f"{stem}_{frame.name}{FORMAT_SUFFIXES[file_format]}"


@dataclass(frozen=True)
class ExportSummary:
    """What `export_model` wrote: the SH degree the file holds, its size, the size of the Inria PLY of the
    same Gaussians (same SH degree), and, for a format that cannot record it, the frame ``gsplat-py render``
    will take the file to be in unless told (None when the file records its frame)."""

    sh_degree: int
    size: int
    ply_size: int
    assumed_frame: str | None

    @property
    def ratio(self) -> float:
        """How many times smaller than the PLY."""
        return self.ply_size / self.size


def export_model(
    splats: GaussianSplats,
    frame: WorldFrame,
    output: Path,
    file_format: str,
    sh_degree: int | None = None,
    spz_version: int = SPZ_VERSION,
    sog_palette: int | None = None,
    model_type: str = "3dgs",
) -> ExportSummary:
    """Write ``splats`` (in ``frame``) to ``output`` as ``file_format``, atomically, with the SH cut to
    ``sh_degree`` when given; ``spz_version`` and ``sog_palette`` (the SH palette's size) are options of
    those formats. ParameterError naming ``sh_degree``, ``spz_version`` or ``sog_palette`` for a value the
    model or the format does not have. The formats that record metadata record a 2DGS ``model_type``; the
    others (SPZ, .splat) load as 3DGS."""
    if sh_degree is not None:
        if not 0 <= sh_degree <= splats.sh_degree:
            raise ParameterError(
                "sh_degree", f"{sh_degree}: expected 0 to {splats.sh_degree} (the model's SH degree)"
            )
        splats = splats.with_sh_degree(sh_degree)
    if spz_version not in SPZ_WRITE_VERSIONS:
        raise ParameterError(
            "spz_version", f"{spz_version}: expected one of {', '.join(map(str, SPZ_WRITE_VERSIONS))}"
        )
    if sog_palette is not None and not 1 <= sog_palette <= MAX_PALETTE:
        raise ParameterError("sog_palette", f"{sog_palette}: expected 1 to {MAX_PALETTE} entries")
    comments = frame_comments(frame) + model_type_comments(model_type)
    if file_format == "ply":
        write_ply(output, splats, comments)
    elif file_format == "compressed-ply":
        write_compressed_ply(output, splats, comments)
    elif file_format == "spz":
        write_spz(output, splats, spz_version)
    elif file_format == "sog":
        write_sog(output, splats, comments, f"gsplat_py {__version__}", sog_palette)
    elif file_format == "splat":
        write_splat(output, splats)
    else:
        raise ParameterError(
            "file_format", f"expected one of {', '.join(EXPORT_FORMATS)}, got {file_format!r}"
        )
    assumed = None if file_format in RECORDS_METADATA else default_frame_name(output)
    degree = 0 if file_format == "splat" else splats.sh_degree
    ply_size = ply_file_size(splats.num_gaussians, degree, comments)
    return ExportSummary(degree, output.stat().st_size, ply_size, assumed)
