"""The 32-byte-per-splat ``.splat`` format that web viewers load (antimatter15/splat and its descendants).

Each splat is 32 little-endian bytes, with no header; the file length is 32 N:

    offset  0  float32 x, y, z            position
    offset 12  float32 sx, sy, sz         scales (linear: exp of the PLY's log-scales)
    offset 24  uint8   r, g, b, a         colour = clamp(0.5 + SH_C0 * f_dc, 0, 1) * 255,
                                          alpha = sigmoid(opacity) * 255
    offset 28  uint8   qw, qx, qy, qz     normalised rotation, each component round(q * 128 + 128)
                                          clamped to 0..255

Only the SH DC term survives (view-dependent colour is dropped), colours and rotations are quantised to
8 bits, and splats are sorted by decreasing size x opacity, exp(s0 + s1 + s2) * sigmoid(opacity) (the
order the format's converters write, so that viewers stream the biggest splats first).

:func:`read_splat` turns a file back into Gaussians of SH degree 0 for rendering (its docstring says how
the 8-bit values and zero scales are decoded).
"""

from __future__ import annotations

import os

import numpy as np

from ..model import SH_C0, GaussianSplats
from .atomic import atomic_open
from .packing import (
    SplatArrays,
    SplatFormatError,
    byte_to_logit,
    check_finite,
    opacity_to_byte,
    read_file,
    require_gaussians,
    sigmoid,
    splat_arrays,
    splats_from_arrays,
)
from .paths import PathLike

__all__ = ["SPLAT_DTYPE", "write_splat", "read_splat"]


SPLAT_DTYPE = np.dtype(
    [("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)]
)


def _records(arrays: SplatArrays) -> np.ndarray:
    """The ``.splat`` records (a structured array of SPLAT_DTYPE), sorted as written."""
    opacity = sigmoid(arrays.logit_opacities)
    order = np.argsort(-np.exp(arrays.log_scales.sum(axis=1)) * opacity, kind="stable")
    norms = np.linalg.norm(arrays.quats, axis=1, keepdims=True)
    unit_quats = arrays.quats / np.where(norms > 0, norms, 1.0)

    records = np.empty(len(order), dtype=SPLAT_DTYPE)
    records["position"] = arrays.means[order]
    records["scale"] = np.exp(arrays.log_scales[order])
    rgb = np.clip(0.5 + SH_C0 * arrays.sh[order, 0], 0.0, 1.0)
    records["rgba"][:, :3] = np.round(rgb * 255.0).astype(np.uint8)
    records["rgba"][:, 3] = opacity_to_byte(arrays.logit_opacities[order])
    records["rotation"] = np.clip(np.round(unit_quats[order] * 128.0 + 128.0), 0, 255).astype(np.uint8)
    return records


def write_splat(path: PathLike, splats: GaussianSplats) -> None:
    """Write ``splats`` as a ``.splat`` file, atomically (ValueError before writing if they are invalid or
    there are none)."""
    records = _records(splat_arrays(path, splats))
    with atomic_open(path) as file:
        file.write(records.tobytes())


def read_splat(path: PathLike) -> GaussianSplats:
    """Read a ``.splat`` file into float32 splats of SH degree 0, in the file's order: log-scales log(scale)
    (a scale of 0 becomes the smallest positive float32), SH DC (rgb - 0.5) / SH_C0, opacity logits of the
    alpha (clamped as `gsplat_py.io.packing.byte_to_logit` does), the rotation bytes as (b - 128) / 128 (a
    zero quaternion becomes the identity). SplatFormatError naming the file for a size that is no whole
    number of records, no records, or a non-finite position or scale."""
    location = os.fspath(path)
    data = read_file(location)
    if len(data) % SPLAT_DTYPE.itemsize:
        raise SplatFormatError(
            f"{location}: {len(data)} bytes is not a whole number of {SPLAT_DTYPE.itemsize}-byte splats"
        )
    records = np.frombuffer(data, dtype=SPLAT_DTYPE)
    require_gaussians(location, "records", len(records))
    check_finite(location, "position", records["position"])
    check_finite(location, "scale", records["scale"])
    tiny = float(np.finfo(np.float32).tiny)
    log_scales = np.log(np.maximum(np.abs(records["scale"].astype(np.float64)), tiny))
    rgba = records["rgba"].astype(np.float64)
    quats = (records["rotation"].astype(np.float64) - 128.0) / 128.0
    quats[~quats.any(axis=1)] = (1.0, 0.0, 0.0, 0.0)
    dc = (rgba[:, :3] / 255.0 - 0.5) / SH_C0
    logit_opacities = byte_to_logit(rgba[:, 3])
    return splats_from_arrays(records["position"], quats, log_scales, logit_opacities, dc[:, None, :])
