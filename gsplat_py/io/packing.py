"""The pieces the compressed splat formats share (`gsplat_py.io.spz`, `gsplat_py.io.sog`,
`gsplat_py.io.compressed_ply`): their error, the Gaussians as float64 arrays, Morton order, the
"smallest three" quaternion split, 8-bit opacities and the channel-major ``f_rest`` layout.

Writers quantise in float64 from these arrays; readers return float32 `GaussianSplats`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..model import GaussianSplats
from .paths import PathLike

__all__ = [
    "SplatFormatError",
    "OPACITY_EPS",
    "SplatArrays",
    "splat_arrays",
    "splats_from_arrays",
    "morton_order",
    "smallest_three",
    "from_smallest_three",
    "opacity_to_byte",
    "byte_to_logit",
    "sigmoid",
    "channel_major_rest",
    "sh_from_channel_major",
    "check_finite",
    "require_gaussians",
    "read_file",
]

# Decoded opacities are kept in [OPACITY_EPS, 1 - OPACITY_EPS]: the 8-bit alphas 0 and 255 would otherwise
# be logits of -inf and +inf. Renders do not change: the rasterizer skips alphas below 1/255 and caps them at
# 0.99.
OPACITY_EPS = 1e-6
MORTON_BITS = 10  # per axis: 30-bit codes, a 1024^3 grid over the bounding box


class SplatFormatError(ValueError):
    """A splat file that is not a readable file of its format; the message names the file and the field."""


@dataclass(frozen=True)
class SplatArrays:
    """The Gaussians as float64 numpy arrays, in the parameterisation of `GaussianSplats`."""

    means: np.ndarray  # [N, 3]
    quats: np.ndarray  # [N, 4] w x y z
    log_scales: np.ndarray  # [N, 3]
    logit_opacities: np.ndarray  # [N]
    sh: np.ndarray  # [N, K, 3]


def splat_arrays(path: PathLike, splats: GaussianSplats) -> SplatArrays:
    """``splats`` as float64 arrays, after validating them (ValueError naming ``path``, the file to be
    written, before anything is written). Zero Gaussians is an error: the compressed formats' readers
    reject empty files."""
    try:
        splats.validate()
    except (ValueError, TypeError) as error:
        raise type(error)(f"{os.fspath(path)}: cannot write splats: {error}") from None
    if splats.num_gaussians == 0:
        raise ValueError(f"{os.fspath(path)}: cannot write splats: the model has no Gaussians")

    def array(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().to(device="cpu", dtype=torch.float64).numpy()

    return SplatArrays(
        array(splats.means),
        array(splats.quats),
        array(splats.log_scales),
        array(splats.logit_opacities),
        array(splats.sh),
    )


def splats_from_arrays(
    means: np.ndarray, quats: np.ndarray, log_scales: np.ndarray, logit_opacities: np.ndarray, sh: np.ndarray
) -> GaussianSplats:
    """Float32 CPU `GaussianSplats` from decoded arrays."""

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    return GaussianSplats(
        means=tensor(means),
        quats=tensor(quats),
        log_scales=tensor(log_scales),
        logit_opacities=tensor(logit_opacities),
        sh=tensor(sh),
    )


def _spread_bits(values: np.ndarray) -> np.ndarray:
    """Each 10-bit integer's bits moved to every third position (bit i -> bit 3i)."""
    x = values.astype(np.uint64) & np.uint64(0x3FF)
    x = (x | (x << np.uint64(16))) & np.uint64(0x030000FF)
    x = (x | (x << np.uint64(8))) & np.uint64(0x0300F00F)
    x = (x | (x << np.uint64(4))) & np.uint64(0x030C30C3)
    return (x | (x << np.uint64(2))) & np.uint64(0x09249249)


def morton_order(means: np.ndarray) -> np.ndarray:
    """The permutation that sorts points [N, 3] along a Morton (Z-order) curve over their bounding box
    (MORTON_BITS bits per axis; ties keep their order), so that neighbours in the file are neighbours in
    space: tight chunk bounds for the compressed PLY, smooth textures for SOG."""
    low = means.min(axis=0)
    extent = means.max(axis=0) - low
    cells = (1 << MORTON_BITS) - 1
    scaled = (means - low) / np.where(extent > 0, extent, 1.0) * cells
    grid = np.clip(np.floor(scaled + 0.5), 0, cells).astype(np.int64)
    codes = _spread_bits(grid[:, 0]) | (_spread_bits(grid[:, 1]) << np.uint64(1))
    codes |= _spread_bits(grid[:, 2]) << np.uint64(2)
    return np.argsort(codes, kind="stable")


def smallest_three(quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The "smallest three" split of quaternions [N, 4] (components in the caller's order): the index of the
    largest-magnitude component [N] and the other three, in order [N, 3], of the unit quaternion signed so
    that the largest is positive (q and -q are the same rotation). Each of the three is in
    [-1/sqrt(2), 1/sqrt(2)], and the largest is sqrt(1 - their squared norm)."""
    norms = np.linalg.norm(quats, axis=1, keepdims=True)
    unit = quats / np.where(norms > 0, norms, 1.0)
    largest = np.argmax(np.abs(unit), axis=1)
    rows = np.arange(len(unit))
    unit = unit * np.where(unit[rows, largest] < 0, -1.0, 1.0)[:, None]
    keep = np.ones_like(unit, dtype=bool)
    keep[rows, largest] = False
    return largest, unit[keep].reshape(-1, 3)


def from_smallest_three(largest: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Quaternions [N, 4] from :func:`smallest_three`'s split: the largest component is rebuilt as
    sqrt(max(0, 1 - |others|^2))."""
    count = len(largest)
    quats = np.empty((count, 4), dtype=np.float64)
    rows = np.arange(count)
    keep = np.ones((count, 4), dtype=bool)
    keep[rows, largest] = False
    quats[keep] = others.reshape(-1)
    quats[rows, largest] = np.sqrt(np.maximum(0.0, 1.0 - np.sum(others * others, axis=1)))
    return quats


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def opacity_to_byte(logit_opacities: np.ndarray) -> np.ndarray:
    """8-bit alpha: round(255 sigmoid(logit)) (the nearest of the 256 levels k / 255)."""
    return np.clip(np.round(sigmoid(logit_opacities) * 255.0), 0, 255).astype(np.uint8)


def byte_to_logit(alpha: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """The logits of opacities ``alpha / scale``, clamped to [OPACITY_EPS, 1 - OPACITY_EPS]."""
    opacity = np.clip(alpha.astype(np.float64) / scale, OPACITY_EPS, 1.0 - OPACITY_EPS)
    return np.log(opacity / (1.0 - opacity))


def channel_major_rest(sh: np.ndarray) -> np.ndarray:
    """The SH coefficients after the DC term, [N, K, 3] -> [N, 3 (K - 1)] channel-major: column
    c (K - 1) + (k - 1) holds coefficient k of channel c (the PLY's ``f_rest_*`` order)."""
    count, k = sh.shape[0], sh.shape[1]
    return sh[:, 1:, :].transpose(0, 2, 1).reshape(count, 3 * (k - 1))


def sh_from_channel_major(dc: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """[N, K, 3] SH coefficients from the DC term [N, 3] and the channel-major rest [N, 3 (K - 1)]."""
    count = dc.shape[0]
    k = rest.shape[1] // 3 + 1
    sh = np.empty((count, k, 3), dtype=np.result_type(dc, rest))
    sh[:, 0] = dc
    sh[:, 1:] = rest.reshape(count, 3, k - 1).transpose(0, 2, 1)
    return sh


def check_finite(path: PathLike, field: str, values: np.ndarray) -> None:
    """SplatFormatError naming ``field`` and its first Gaussian (row) whose value is NaN or infinite."""
    values = np.asarray(values)
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1) if values.ndim else ~np.isfinite(values)
    if np.any(bad):
        row = int(np.flatnonzero(bad)[0])
        raise SplatFormatError(f"{os.fspath(path)}: {field}: non-finite value at row {row}")


def require_gaussians(path: PathLike, field: str, count: int) -> None:
    """SplatFormatError unless ``count`` (the file's ``field``) is at least one Gaussian."""
    if count < 1:
        raise SplatFormatError(f"{os.fspath(path)}: {field}: {count} Gaussians; expected at least 1")


def read_file(path: PathLike) -> bytes:
    """The bytes of the file at ``path``; SplatFormatError naming it when it cannot be read."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise SplatFormatError(f"{os.fspath(path)}: cannot read file: {error.strerror or error}") from None
