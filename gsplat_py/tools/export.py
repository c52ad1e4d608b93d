"""Exporting a saved model for other tools: the Inria PLY, or the ``.splat`` file web viewers load.

- ``ply``: the Inria layout of `gsplat_py.io.ply` at the model's SH degree (a checkpoint's is the degree it
  was trained to), with the world frame recorded in the header (`gsplat_py.saved_models`), so that
  ``gsplat-py render`` puts cameras in the right place.
- ``splat``: `gsplat_py.io.splat`, 32 bytes a Gaussian: position (3 float32), linear scales exp(log-scale)
  (3 float32), RGBA (4 uint8: colour 0.5 + SH_C0 f_dc clamped to [0, 1], alpha sigmoid(opacity), both
  times 255 and rounded), rotation (4 uint8: the normalised quaternion w x y z, round(128 q + 128) clamped
  to 0..255); sorted by decreasing exp(sum of log-scales) x opacity. View-dependent colour (SH degree >= 1)
  is dropped and the file has no header, so it records no frame.

``frame`` moves the Gaussians into another world frame first (`gsplat_py.frames.transform_splats`: means,
rotations, scales and the SH bands all move): "colmap" to line up with the COLMAP reconstruction and with
models trained by other implementations, "normalized" for gsplat_py's normalisation of the scene.
"""

from __future__ import annotations

from pathlib import Path

from ..data.world_frame import FRAME_NAMES, WorldFrame, frame_comments
from ..errors import ParameterError
from ..io.ply import write_ply
from ..io.splat import write_splat
from ..model import GaussianSplats
from ..training.checkpoint import PLY_FILE
from .frames import frame_change, transform_splats
from .saved_models import SavedModel, scene_normalization

__all__ = ["EXPORT_FORMATS", "splats_in_frame", "default_export_path", "export_model"]

EXPORT_FORMATS = ("ply", "splat")


def splats_in_frame(
    model: SavedModel,
    frame: str | None = None,
    data: Path | None = None,
    data_factor: int | None = None,
) -> tuple[GaussianSplats, WorldFrame]:
    """The model's Gaussians in the world frame named ``frame`` (default: the model's own) and that frame.
    A normalisation the model does not record comes from its scene (``data``, else its run's)."""
    if frame is None or frame == model.frame.name:
        return model.splats, model.frame
    if frame not in FRAME_NAMES:
        raise ParameterError("frame", f"expected one of {', '.join(FRAME_NAMES)}, got {frame!r}")
    normalization = scene_normalization(model, data, data_factor, need=f"exporting in the {frame} frame")
    source = model.frame if model.frame.from_colmap is not None else WorldFrame.normalized(normalization)
    target = WorldFrame.colmap() if frame == "colmap" else WorldFrame.normalized(normalization)
    change = frame_change(source, target, str(model.source))
    return (model.splats if change is None else transform_splats(model.splats, change)), target


def default_export_path(model: SavedModel, file_format: str, frame: WorldFrame) -> Path:
    """RUN/point_cloud_<frame>.<format> for a training run, else <ply folder>/<ply stem>_<frame>.<format>."""
    stem = Path(PLY_FILE).stem if model.run is not None else model.source.stem
    folder = model.run if model.run is not None else model.source.parent
    return folder / f"{stem}_{frame.name}.{file_format}"


def export_model(splats: GaussianSplats, frame: WorldFrame, output: Path, file_format: str) -> None:
    """Write ``splats`` (in ``frame``) to ``output`` as ``file_format`` ("ply" or "splat"), atomically."""
    if file_format == "ply":
        write_ply(output, splats, frame_comments(frame))
    elif file_format == "splat":
        write_splat(output, splats)
    else:
        raise ParameterError(
            "file_format", f"expected one of {', '.join(EXPORT_FORMATS)}, got {file_format!r}"
        )
