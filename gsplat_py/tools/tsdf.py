"""Depth maps -> triangle mesh: TSDF fusion on a dense voxel grid, then marching tetrahedra.

TSDF fusion (Curless & Levoy 1996, as Open3D's ``ScalableTSDFVolume`` that the 2DGS paper's mesh extraction
uses): each voxel centre x is projected into every view; with the view's depth d at that pixel and the
voxel's depth z along the optical axis, sdf = d - z (positive in front of the surface). Views where the
pixel has no depth (d <= 0), d > ``depth_trunc``, or sdf < -``sdf_trunc`` (far behind the surface: occluded)
leave the voxel alone; the others add min(1, sdf / sdf_trunc) to a running mean (weight 1 per view), and
the pixel's colour to the voxel's. The surface is the zero level set of the mean over the voxels some view
observed.

Marching tetrahedra rather than marching cubes: each cube of 8 neighbouring voxels is cut into 6
tetrahedra sharing its main diagonal (the Freudenthal / Kuhn subdivision, the same in every cube, so
neighbouring cubes' faces are cut alike and the mesh is closed where the volume is observed). A
tetrahedron has only 3 sign patterns up to symmetry (no surface; one corner apart: a triangle; two and
two: a quad as two triangles), so there is no case table to get wrong and no ambiguous case; the price is
about twice as many triangles as marching cubes for the same grid. Vertices are shared between triangles
(one per crossed grid edge, at the linear interpolation of the edge's values), and each triangle is
oriented so that its normal (counter-clockwise) points to the positive side (free space).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ParameterError

__all__ = [
    "DEFAULT_RESOLUTION",
    "MAX_VOXELS",
    "check_mesh_parameters",
    "SDF_TRUNC_VOXELS",
    "Mesh",
    "VoxelGrid",
    "TsdfVolume",
    "fuse_depth_maps",
    "marching_tetrahedra",
    "mesh_from_depth_maps",
    "surface_points",
]

# Voxels projected into a view at a time: ~100 MB of temporaries.
_VOXEL_CHUNK = 1 << 21
DEFAULT_RESOLUTION = 256  # voxels along the longest side of the surface's box, without a voxel size
SDF_TRUNC_VOXELS = 5.0  # the truncation without one given, in voxels (the 2DGS paper's 5 voxel sizes)
# A dense grid holds 5 floats per voxel (TSDF, weight, colour): 2^25 voxels is 640 MB.
MAX_VOXELS = 1 << 25
# The box of the surface: these quantiles of the depth points on each axis (stray far points do not
# stretch it), padded by the truncation distance and a voxel.
_BOX_QUANTILES = (0.001, 0.999)
# Every how many pixels (along x and y) a depth point is taken for the box.
_BOX_STRIDE = 4


@dataclass(frozen=True)
class VoxelGrid:
    """A dense grid of ``shape`` voxels of side ``voxel_size``; voxel (i, j, k) is centred at
    ``origin + (i, j, k) * voxel_size`` (world units)."""

    origin: tuple[float, float, float]
    voxel_size: float
    shape: tuple[int, int, int]

    @property
    def num_voxels(self) -> int:
        return self.shape[0] * self.shape[1] * self.shape[2]

    def centres(self, flat: Tensor) -> Tensor:
        """[M, 3] float64 world positions of the voxels with flat (row-major) indices ``flat``."""
        ny, nz = self.shape[1], self.shape[2]
        ijk = torch.stack([flat // (ny * nz), (flat // nz) % ny, flat % nz], dim=-1)
        return torch.tensor(self.origin, dtype=torch.float64) + ijk.double() * self.voxel_size


@dataclass
class TsdfVolume:
    """The fused volume: ``tsdf`` [X, Y, Z] (in [-1, 1], units of sdf_trunc), ``weight`` [X, Y, Z] (how many
    views observed each voxel; 0: unknown), ``color`` [X, Y, Z, 3] (mean colour in [0, 1], or None)."""

    grid: VoxelGrid
    tsdf: Tensor
    weight: Tensor
    color: Tensor | None


def _chunks(count: int) -> Iterator[Tensor]:
    for start in range(0, count, _VOXEL_CHUNK):
        yield torch.arange(start, min(start + _VOXEL_CHUNK, count))


def fuse_depth_maps(
    grid: VoxelGrid,
    depths: Sequence[Tensor],
    world_to_cameras: Tensor,
    Ks: Tensor,
    sdf_trunc: float,
    depth_trunc: float,
    colors: Sequence[Tensor] | None = None,
) -> TsdfVolume:
    """Fuse the z-depth maps ``depths`` (each [H, W]; 0 where there is none) of the pinhole cameras
    ``world_to_cameras`` [V, 4, 4] / ``Ks`` [V, 3, 3] into ``grid`` (module docstring); ``colors`` (each
    [H, W, 3] in [0, 1]) give the voxels colours. Pixel (u, v) covers [u, u + 1) x [v, v + 1)."""
    if len(depths) != len(world_to_cameras) or len(depths) != len(Ks):
        raise ValueError(
            f"depths: {len(depths)} maps for {len(world_to_cameras)} cameras and {len(Ks)} intrinsics"
        )
    if not sdf_trunc > 0.0:
        raise ValueError(f"sdf_trunc: expected a positive distance, got {sdf_trunc}")
    count = grid.num_voxels
    tsdf_sum = torch.zeros(count, dtype=torch.float32)
    weight = torch.zeros(count, dtype=torch.float32)
    color_sum = torch.zeros(count, 3, dtype=torch.float32) if colors is not None else None
    cameras = [
        (
            depth.detach().float().cpu().reshape(-1),
            depth.shape,
            world_to_cameras[view, :3].double().cpu(),
            Ks[view].double().cpu(),
            colors[view].detach().float().cpu().reshape(-1, 3) if colors is not None else None,
        )
        for view, depth in enumerate(depths)
    ]
    for flat in _chunks(count):
        centres = torch.cat([grid.centres(flat), torch.ones(len(flat), 1, dtype=torch.float64)], dim=1)
        chunk_tsdf = torch.zeros(len(flat), dtype=torch.float64)
        chunk_weight = torch.zeros(len(flat), dtype=torch.float64)
        chunk_color = torch.zeros(len(flat), 3, dtype=torch.float32) if color_sum is not None else None
        for depth, (height, width), extrinsics, K, image in cameras:
            camera = centres @ extrinsics.T
            z = camera[:, 2]
            in_front = z > 1e-9
            safe_z = torch.where(in_front, z, 1.0)
            u = torch.floor(K[0, 0] * camera[:, 0] / safe_z + K[0, 2])
            v = torch.floor(K[1, 1] * camera[:, 1] / safe_z + K[1, 2])
            inside = in_front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
            pixel = (v.clamp(0, height - 1) * width + u.clamp(0, width - 1)).long()
            measured = depth[pixel].double()
            sdf = measured - z
            observed = inside & (measured > 0.0) & (measured <= depth_trunc) & (sdf >= -sdf_trunc)
            chunk_tsdf += torch.where(observed, (sdf / sdf_trunc).clamp(max=1.0), 0.0)
            chunk_weight += observed
            if image is not None and chunk_color is not None:
                chunk_color += image[pixel] * observed[:, None]
        tsdf_sum[flat] = chunk_tsdf.float()
        weight[flat] = chunk_weight.float()
        if color_sum is not None and chunk_color is not None:
            color_sum[flat] = chunk_color
    seen = weight.clamp(min=1.0)
    return TsdfVolume(
        grid,
        (tsdf_sum / seen).reshape(grid.shape),
        weight.reshape(grid.shape),
        (color_sum / seen[:, None]).reshape(*grid.shape, 3) if color_sum is not None else None,
    )


# The 6 tetrahedra of a cube: corner 0 -> + one axis -> + a second -> corner (1, 1, 1), for each order of the
# axes. Corners as (dx, dy, dz) offsets.
_TETRAHEDRA = torch.tensor(
    [
        [[0, 0, 0], list(first), [a + b for a, b in zip(first, second)], [1, 1, 1]]
        for first, second, _ in itertools.permutations(([1, 0, 0], [0, 1, 0], [0, 0, 1]))
    ]
)  # [6, 4, 3]


def marching_tetrahedra(
    values: Tensor, valid: Tensor, attributes: Tensor | None = None, level: float = 0.0
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The ``level`` surface of ``values`` [X, Y, Z] over the cubes whose 8 corners are all ``valid``
    (module docstring).

    Returns (vertices [V, 3] float64 in grid index units, faces [F, 3] int64, the ``attributes``
    [X, Y, Z, D] interpolated at the vertices or None). Corners with a value below ``level`` are inside.
    """
    shape = values.shape
    if valid.shape != shape or len(shape) != 3:
        raise ValueError(f"valid: expected the shape of values {list(shape)}, got {list(valid.shape)}")
    values = values.double()
    nx, ny, nz = shape
    if min(shape) < 2:
        return torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.int64), None
    # Cubes with all corners valid, some inside and some not: the only ones the surface crosses.
    low = torch.full((nx - 1, ny - 1, nz - 1), torch.inf, dtype=torch.float64)
    high = torch.full_like(low, -torch.inf)
    all_valid = torch.ones_like(low, dtype=torch.bool)
    for dx, dy, dz in itertools.product((0, 1), repeat=3):
        corner = values[dx : nx - 1 + dx, dy : ny - 1 + dy, dz : nz - 1 + dz]
        low = torch.minimum(low, corner)
        high = torch.maximum(high, corner)
        all_valid &= valid[dx : nx - 1 + dx, dy : ny - 1 + dy, dz : nz - 1 + dz]
    cubes = torch.nonzero(all_valid & (low < level) & (high >= level))  # [C, 3]
    corners = cubes[:, None, None, :] + _TETRAHEDRA[None]  # [C, 6, 4, 3]
    point_ids = ((corners[..., 0] * ny + corners[..., 1]) * nz + corners[..., 2]).reshape(-1, 4)  # [T, 4]
    flat_values = values.reshape(-1)
    inside = flat_values[point_ids] < level
    inside_count = inside.sum(dim=1)
    # Inside corners first (a stable order), so each case reads its corners by position.
    order = torch.argsort((~inside).to(torch.int8), dim=1, stable=True)
    ordered = point_ids.gather(1, order)
    edges = []  # [T_case, 3 or 4, 2] grid points at the ends of the crossed edges, in triangle order
    for lone, others in (((0,), (1, 2, 3)), ((3,), (0, 1, 2))):
        # one corner apart from the other three: one inside (count 1) or one outside (count 3)
        rows = ordered[inside_count == (1 if lone == (0,) else 3)]
        edges.append(torch.stack([torch.stack([rows[:, lone[0]], rows[:, o]], dim=1) for o in others], dim=1))
    rows = ordered[inside_count == 2]  # two inside (0, 1), two outside (2, 3): the quad 02-03-13-12
    quad = torch.stack(
        [torch.stack([rows[:, a], rows[:, b]], dim=1) for a, b in ((0, 2), (0, 3), (1, 3), (1, 2))], dim=1
    )
    edges += [quad[:, [0, 1, 2]], quad[:, [0, 2, 3]]]
    triangle_edges = torch.cat(edges)  # [F, 3, 2]
    low_end, high_end = triangle_edges.amin(dim=2), triangle_edges.amax(dim=2)
    point_count = nx * ny * nz
    keys, vertex_of = torch.unique((low_end * point_count + high_end).reshape(-1), return_inverse=True)
    faces = vertex_of.reshape(-1, 3)
    a, b = keys // point_count, keys % point_count
    value_a, value_b = flat_values[a], flat_values[b]
    t = ((level - value_a) / (value_b - value_a)).clamp(0.0, 1.0)[:, None]

    def position(flat: Tensor) -> Tensor:
        return torch.stack([flat // (ny * nz), (flat // nz) % ny, flat % nz], dim=-1).double()

    vertices = position(a) + t * (position(b) - position(a))
    # Orientation: within a tetrahedron the surface is the plane where the linear interpolant is ``level``,
    # so it separates every inside corner from every outside one; each triangle's first crossed edge has
    # one of each, and the normal must point from the inside end to the outside end.
    first_edge = triangle_edges[:, 0]
    first_is_inside = flat_values[first_edge[:, 0]] < level
    inner = position(torch.where(first_is_inside, first_edge[:, 0], first_edge[:, 1]))
    outer = position(torch.where(first_is_inside, first_edge[:, 1], first_edge[:, 0]))
    corner_a, corner_b, corner_c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    normal = torch.linalg.cross(corner_b - corner_a, corner_c - corner_a)
    flip = (normal * (outer - inner)).sum(dim=1) < 0.0
    faces = torch.where(flip[:, None], faces[:, [0, 2, 1]], faces)
    interpolated = None
    if attributes is not None:
        flat_attributes = attributes.reshape(point_count, -1).double()
        interpolated = flat_attributes[a] + t * (flat_attributes[b] - flat_attributes[a])
    return vertices, faces, interpolated


@dataclass
class Mesh:
    """A triangle mesh: ``vertices`` [V, 3] float64 (world units), ``faces`` [F, 3] int64 (counter-clockwise
    seen from free space), ``colors`` [V, 3] in [0, 1] or None."""

    vertices: Tensor
    faces: Tensor
    colors: Tensor | None


def surface_points(
    depths: Sequence[Tensor], world_to_cameras: Tensor, Ks: Tensor, depth_trunc: float, stride: int = 1
) -> Tensor:
    """[P, 3] float64 world points of the depth maps' pixels with 0 < depth <= ``depth_trunc`` (every
    ``stride``-th pixel along each axis), through the pixel centres."""
    points = []
    for view, depth in enumerate(depths):
        depth = depth.detach().double().cpu()[::stride, ::stride]
        rows, columns = torch.meshgrid(
            torch.arange(0, depths[view].shape[0], stride, dtype=torch.float64),
            torch.arange(0, depths[view].shape[1], stride, dtype=torch.float64),
            indexing="ij",
        )
        keep = (depth > 0.0) & (depth <= depth_trunc)
        K = Ks[view].double().cpu()
        z = depth[keep]
        camera = torch.stack(
            [(columns[keep] + 0.5 - K[0, 2]) / K[0, 0] * z, (rows[keep] + 0.5 - K[1, 2]) / K[1, 1] * z, z],
            dim=-1,
        )
        rotation = world_to_cameras[view, :3, :3].double().cpu()
        translation = world_to_cameras[view, :3, 3].double().cpu()
        points.append((camera - translation) @ rotation)  # R^T (x - t)
    return torch.cat(points) if points else torch.zeros(0, 3, dtype=torch.float64)


def check_mesh_parameters(
    depth_trunc: float | None, voxel_size: float | None, sdf_trunc: float | None, resolution: int
) -> None:
    """ParameterError naming the first of the distances that is given and not positive and finite, or a
    ``resolution`` below 2 voxels."""
    for name, value in (("depth_trunc", depth_trunc), ("voxel_size", voxel_size), ("sdf_trunc", sdf_trunc)):
        if value is not None and not (math.isfinite(value) and value > 0.0):
            raise ParameterError(name, f"expected a positive distance, got {value}")
    if resolution < 2:
        raise ParameterError("resolution", f"expected at least 2 voxels, got {resolution}")


def mesh_from_depth_maps(
    depths: Sequence[Tensor],
    world_to_cameras: Tensor,
    Ks: Tensor,
    depth_trunc: float,
    voxel_size: float | None = None,
    sdf_trunc: float | None = None,
    colors: Sequence[Tensor] | None = None,
    resolution: int = DEFAULT_RESOLUTION,
) -> Mesh:
    """The mesh of the z-depth maps ``depths`` (each [H, W], 0 where there is none) of the pinhole cameras
    ``world_to_cameras`` / ``Ks``: TSDF fusion on a grid over the box of their points, then marching
    tetrahedra (module docstring).

    ``voxel_size`` defaults to the box's longest side / ``resolution``, ``sdf_trunc`` to
    ``SDF_TRUNC_VOXELS`` voxels; depths beyond ``depth_trunc`` are ignored. ParameterError (naming the
    parameter) for a non-positive size or a grid of more than ``MAX_VOXELS``; ValueError when no depth map
    has a depth within ``depth_trunc``.
    """
    check_mesh_parameters(depth_trunc, voxel_size, sdf_trunc, resolution)
    points = surface_points(depths, world_to_cameras, Ks, depth_trunc, _BOX_STRIDE)
    if len(points) == 0:
        raise ValueError(f"no view has a depth within depth_trunc = {depth_trunc:g}: nothing to mesh")
    quantiles = torch.tensor(_BOX_QUANTILES, dtype=torch.float64)
    low, high = torch.quantile(points[:: max(1, len(points) // 1_000_000)], quantiles, dim=0)
    if voxel_size is None:
        voxel_size = max(float((high - low).max()), 1e-9) / resolution
    if sdf_trunc is None:
        sdf_trunc = SDF_TRUNC_VOXELS * voxel_size
    padding = sdf_trunc + voxel_size
    low, high = low - padding, high + padding
    shape = tuple(int(n) for n in torch.ceil((high - low) / voxel_size).long() + 1)
    count = shape[0] * shape[1] * shape[2]
    if count > MAX_VOXELS:
        raise ParameterError(
            "voxel_size",
            f"{voxel_size:.4g} makes a grid of {shape[0]} x {shape[1]} x {shape[2]} voxels over the "
            f"surface's box, more than {MAX_VOXELS:,}: expected a larger voxel size",
        )
    grid = VoxelGrid((float(low[0]), float(low[1]), float(low[2])), voxel_size, shape)  # type: ignore[arg-type]
    volume = fuse_depth_maps(grid, depths, world_to_cameras, Ks, sdf_trunc, depth_trunc, colors)
    vertices, faces, vertex_colors = marching_tetrahedra(volume.tsdf, volume.weight > 0.0, volume.color)
    world = torch.tensor(grid.origin, dtype=torch.float64) + vertices * voxel_size
    return Mesh(world, faces, vertex_colors.clamp(0.0, 1.0) if vertex_colors is not None else None)
