"""The structured results the two implementations of the ops (``ops``: compiled, ``reference``: plain
PyTorch) share, so a caller handles both the same way."""

from typing import NamedTuple

from torch import Tensor


class PackedProjection(NamedTuple):
    """The visible (camera, Gaussian) pairs of a projection, in (batch, camera, Gaussian) order."""

    batch_ids: Tensor  # [nnz] int64, into the flattened batch dimensions
    camera_ids: Tensor  # [nnz] int64
    gaussian_ids: Tensor  # [nnz] int64, within its batch
    radii: Tensor  # [nnz, 2] int32
    means2d: Tensor  # [nnz, 2]
    depths: Tensor  # [nnz]
    conics: Tensor  # [nnz, 3]
    compensations: Tensor | None  # [nnz], None without calc_compensations


class TileBins(NamedTuple):
    """The binning of projected Gaussians into tiles; the intersections sorted by (image, tile, depth)."""

    tiles_per_gauss: Tensor  # [..., N] or [nnz] int32
    isect_offsets: Tensor  # [..., TH, TW] or [I, TH, TW] int32: each tile's first intersection
    flatten_ids: Tensor  # [M] int32, into the flattened entries
    isect_ids: Tensor | None  # [M] int64 gsplat's image | tile | depth keys; None when they do not fit
