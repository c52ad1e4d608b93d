"""Moving Gaussians and cameras between world frames (`gsplat_py.data.world_frame`).

Moving Gaussians by a similarity T (:func:`transform_splats`): means x -> T x; rotations q -> q_R q;
log-scales + log s; opacities unchanged; SH coefficients rotated band by band (:func:`rotate_sh`), so that
the colour seen along a direction d before is seen along R d after. Cameras move with the world
(:func:`transform_cameras`): centres by T, orientations by R. Rendering the moved model from the moved
cameras gives the same image (depths are s times larger).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from ..data.geometry import invert_similarity, split_similarity
from ..data.world_frame import WorldFrame
from ..errors import ParameterError
from ..model import GaussianSplats
from ..rendering.limits import MAX_SH_DEGREE
from ..rendering.reference import spherical_harmonics

__all__ = [
    "SAME_TRANSFORM_ATOL",
    "quaternion_from_rotation",
    "rotation_from_quaternion",
    "rotate_sh",
    "transform_splats",
    "transform_cameras",
    "frame_change",
]

# Similarities computed twice from the same data agree to ~1e-12; a larger difference means other data.
SAME_TRANSFORM_ATOL = 1e-6


def quaternion_from_rotation(rotation: Tensor) -> Tensor:
    """The unit quaternion (w, x, y, z) of a 3x3 rotation matrix (Shepperd's method: no cancellation)."""
    m = rotation.double().tolist()
    trace = m[0][0] + m[1][1] + m[2][2]
    if trace > 0.0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2][1] - m[1][2]) / s, (m[0][2] - m[2][0]) / s, (m[1][0] - m[0][1]) / s]
    elif m[0][0] > m[1][1] and m[0][0] > m[2][2]:
        s = 2.0 * math.sqrt(1.0 + m[0][0] - m[1][1] - m[2][2])
        q = [(m[2][1] - m[1][2]) / s, 0.25 * s, (m[0][1] + m[1][0]) / s, (m[0][2] + m[2][0]) / s]
    elif m[1][1] > m[2][2]:
        s = 2.0 * math.sqrt(1.0 + m[1][1] - m[0][0] - m[2][2])
        q = [(m[0][2] - m[2][0]) / s, (m[0][1] + m[1][0]) / s, 0.25 * s, (m[1][2] + m[2][1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2][2] - m[0][0] - m[1][1])
        q = [(m[1][0] - m[0][1]) / s, (m[0][2] + m[2][0]) / s, (m[1][2] + m[2][1]) / s, 0.25 * s]
    quaternion = torch.tensor(q, dtype=torch.float64)
    return quaternion / quaternion.norm()


def rotation_from_quaternion(quaternion: Tensor) -> Tensor:
    """The 3x3 rotation (float64) of a (w, x, y, z) quaternion of any non-zero norm."""
    w, x, y, z = (quaternion.double() / quaternion.double().norm()).tolist()
    return torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
    )


def _multiply_quaternions(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a b of (w, x, y, z) quaternions (broadcasting): rotation(a b) = rotation(a)
    rotation(b)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


@lru_cache(maxsize=1)
def _sample_directions() -> Tensor:
    """64 unit vectors spread over the sphere (Fibonacci lattice): more than the 25 SH bases of degree 4,
    in general position, so a band's rotation is determined exactly by its values there."""
    count = 64
    index = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * index / count
    azimuth = math.pi * (1.0 + math.sqrt(5.0)) * index
    radius = torch.sqrt(1.0 - z * z)
    return torch.stack([radius * torch.cos(azimuth), radius * torch.sin(azimuth), z], dim=-1)


def _sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """[K, M] values of the renderer's K = (degree + 1)^2 SH basis functions at ``dirs`` [M, 3]: taken from
    the reference implementation itself, so the rotation follows its exact conventions (signs, order)."""
    k = (degree + 1) ** 2
    one_hot = torch.eye(k, dtype=torch.float64)[:, None, :, None].expand(k, 1, k, 3)
    return spherical_harmonics(degree, dirs[None].expand(k, -1, 3), one_hot)[..., 0]


def rotate_sh(sh: Tensor, rotation: Tensor) -> Tensor:
    """SH coefficients [N, K, 3] of the colour function rotated by ``rotation`` (3x3): the result, evaluated
    along R d, equals ``sh`` evaluated along d. Each band l (coefficients l² .. (l+1)² - 1) mixes only
    within itself; its matrix is solved from the basis at sample directions (least squares, exact here)."""
    k = sh.shape[1]
    degree = math.isqrt(k) - 1
    if (degree + 1) ** 2 != k or not 0 <= degree <= MAX_SH_DEGREE:
        expected = ", ".join(str((d + 1) ** 2) for d in range(MAX_SH_DEGREE + 1))
        raise ValueError(f"sh has {k} coefficients per channel; expected one of {expected}")
    if degree == 0:
        return sh.clone()
    dirs = _sample_directions()
    # c'·Y(e) = c·Y(Rᵀe) for all e; with Y_l(Rᵀe) = D Y_l(e) per band, c' = Dᵀ c.
    basis = _sh_basis(degree, dirs)  # [K, M] at e
    basis_rotated_back = _sh_basis(degree, dirs @ rotation.double())  # [K, M] at Rᵀ e (row-vector form)
    result = sh.clone()
    for band in range(1, degree + 1):
        rows = slice(band * band, (band + 1) * (band + 1))
        # basis_rotated_back[rows].T = basis[rows].T @ Dᵀ, so lstsq gives Dᵀ.
        d_transposed = torch.linalg.lstsq(basis[rows].T, basis_rotated_back[rows].T).solution
        result[:, rows] = torch.einsum("ij,njc->nic", d_transposed, sh[:, rows].double()).to(sh.dtype)
    return result


def transform_splats(splats: GaussianSplats, transform: Tensor) -> GaussianSplats:
    """``splats`` moved by the similarity ``transform`` (4x4): see the module docstring. Computed in float64,
    returned in the dtype of ``splats.means``."""
    scale, rotation, translation = split_similarity(transform)
    dtype = splats.means.dtype
    means = splats.means.double() @ (scale * rotation).T + translation
    quats = _multiply_quaternions(quaternion_from_rotation(rotation), splats.quats.double())
    return GaussianSplats(
        means=means.to(dtype),
        quats=quats.to(dtype),
        log_scales=(splats.log_scales.double() + math.log(scale)).to(dtype),
        logit_opacities=splats.logit_opacities.to(dtype).clone(),
        sh=rotate_sh(splats.sh.double(), rotation).to(dtype),
    )


def transform_cameras(world_to_camera: Tensor, transform: Tensor) -> Tensor:
    """World-to-camera matrices [C, 4, 4] of the same (rigid, OpenCV) cameras in the world moved by the
    similarity ``transform``: their centres move by it, their orientations rotate with it (float64)."""
    scale, rotation, translation = split_similarity(transform)
    world_to_camera = world_to_camera.double()
    camera_rotation = world_to_camera[:, :3, :3]  # world -> camera
    centres = -(camera_rotation.transpose(1, 2) @ world_to_camera[:, :3, 3:])[..., 0]  # [C, 3]
    new_rotation = camera_rotation @ rotation.T
    new_centres = scale * centres @ rotation.T + translation
    result = torch.zeros_like(world_to_camera)
    result[:, :3, :3] = new_rotation
    result[:, :3, 3] = -(new_rotation @ new_centres[..., None])[..., 0]
    result[:, 3, 3] = 1.0
    return result


def frame_change(source: WorldFrame, target: WorldFrame, what: str) -> Tensor | None:
    """The similarity taking ``source`` coordinates to ``target`` ones; None when they are the same frame.

    Two normalised frames are the same when either transform is unknown (both then come from the same
    scene's normalisation) or the two agree. ParameterError (``data``), naming ``what`` is being converted,
    when a
    needed transform is unknown.
    """
    if source.name == target.name:
        if source.from_colmap is None or target.from_colmap is None:
            return None
        if torch.allclose(source.from_colmap, target.from_colmap, atol=SAME_TRANSFORM_ATOL, rtol=0.0):
            return None
    if source.from_colmap is None or target.from_colmap is None:
        raise ParameterError(
            "data",
            f"{what}: cannot convert from the {source.name} frame to the {target.name} frame without the "
            "scene's normalisation: give the scene with {data}",
        )
    return target.from_colmap @ invert_similarity(source.from_colmap)
