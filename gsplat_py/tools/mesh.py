"""A trained model -> a triangle mesh (``gsplat-py export --format mesh``), the 2DGS paper's extraction:
render the depth of every training view (a 2DGS model's median depth; a 3DGS model's expected depth,
which is blurrier), leave out the pixels with alpha < 0.5, fuse the depth maps and the rendered colours
into a TSDF and take its zero surface (`gsplat_py.tools.tsdf`). The mesh is a binary PLY with vertex
colours (`gsplat_py.io.mesh_ply`), in the model's world frame (or the one asked for), recorded in its header
as a splat PLY records it.

Defaults, from the scene's scale (as the 2DGS code derives them from the camera extent):
``depth_trunc`` = 2 x the camera extent (1.1 x the largest distance of a training camera from their mean:
the far side of an object the cameras surround); ``voxel_size`` = the longest side of the box of the
rendered surface / ``resolution`` (256: a dense CPU grid; the 2DGS code's 1024 is for its sparse GPU
volume); ``sdf_trunc`` = 5 voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data import View
from ..data.geometry import camera_extent
from ..data.world_frame import WorldFrame, frame_comments
from ..errors import ParameterError
from ..io.images import DEPTH_MIN_ALPHA
from ..io.mesh_ply import write_mesh_ply
from ..model import model_type_comments
from ..rendering import resolve_device
from .camera_paths import cameras_from_views
from .novel_views import render_cameras
from .saved_models import SavedModel
from .tsdf import DEFAULT_RESOLUTION, Mesh, check_mesh_parameters, mesh_from_depth_maps

__all__ = [
    "MESH_FORMAT",
    "MeshOptions",
    "default_depth_trunc",
    "default_mesh_path",
    "mesh_model",
    "write_mesh",
]

MESH_FORMAT = "mesh"  # export's name for it
_DEPTH_TRUNC_EXTENTS = 2.0  # depth_trunc, in camera extents (the 2DGS code's 2 x radius)


@dataclass(frozen=True)
class MeshOptions:
    voxel_size: float | None = None  # world units; default: the surface's box / resolution
    sdf_trunc: float | None = None  # world units; default: 5 voxels
    depth_trunc: float | None = None  # world units; default: 2 x the camera extent
    resolution: int = DEFAULT_RESOLUTION  # voxels along the box's longest side, without a voxel_size
    view_step: int = 1  # fuse every view_step-th training view (fewer renders, for large scenes)
    batch_size: int = 1  # views rendered per call
    device: str = "auto"
    progress: bool = True


def default_depth_trunc(views: Sequence[View]) -> float:
    """Twice the camera extent of ``views`` (module docstring)."""
    centres = torch.stack([view.camera_to_world()[:3, 3] for view in views])
    return _DEPTH_TRUNC_EXTENTS * max(camera_extent(centres), 1e-9)


def default_mesh_path(model: SavedModel, frame: WorldFrame) -> Path:
    """RUN/mesh_<frame>.ply for a training run, else <folder>/<file stem>_mesh_<frame>.ply beside the
    model's file."""
    if model.run is not None:
        return model.run / f"mesh_{frame.name}.ply"
    return model.source.parent / f"{model.source.stem}_mesh_{frame.name}.ply"


def mesh_model(model: SavedModel, views: Sequence[View], options: MeshOptions | None = None) -> Mesh:
    """The mesh of ``model`` from the depth it renders in ``views`` (every ``view_step``-th; in the model's
    frame; module docstring). ParameterError naming the option at fault, before any rendering (and a grid
    too large, after it: the grid's box is the rendered surface's)."""
    options = options if options is not None else MeshOptions()
    if options.view_step < 1:
        raise ParameterError("view_step", f"expected a positive number of views, got {options.view_step}")
    check_mesh_parameters(options.depth_trunc, options.voxel_size, options.sdf_trunc, options.resolution)
    views = list(views)[:: options.view_step]
    if not views:
        raise ValueError("no views to render depth from")
    depth_trunc = options.depth_trunc if options.depth_trunc is not None else default_depth_trunc(views)
    median = model.model_type == "2dgs"
    cameras = cameras_from_views(views)
    depths, colours = [], []
    frames = render_cameras(
        model.splats,
        cameras,
        options.batch_size,
        depth=True,
        device=resolve_device(options.device),
        model_type=model.model_type,
        depth_mode="median" if median else "expected",
    )
    for frame in tqdm(frames, total=len(cameras), unit="view", disable=not options.progress):
        assert frame.depth is not None, "rendered with depth"
        depths.append(torch.where(frame.alpha >= DEPTH_MIN_ALPHA, frame.depth, 0.0).cpu())
        colours.append(frame.rgb.cpu())
    world_to_cameras = torch.stack([camera.world_to_camera for camera in cameras])
    Ks = torch.stack([camera.K for camera in cameras])
    return mesh_from_depth_maps(
        depths,
        world_to_cameras,
        Ks,
        depth_trunc,
        options.voxel_size,
        options.sdf_trunc,
        colours,
        options.resolution,
    )


def write_mesh(path: Path, mesh: Mesh, frame: WorldFrame, model_type: str) -> None:
    """``mesh`` as a PLY at ``path`` (atomically), its frame and the model type in the header."""
    colors = None
    if mesh.colors is not None:
        colors = (mesh.colors.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()
    write_mesh_ply(
        path,
        mesh.vertices.float().numpy(),
        mesh.faces.int().numpy(),
        colors,
        frame_comments(frame) + model_type_comments(model_type),
    )
