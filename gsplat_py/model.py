"""The trainable Gaussian model: parameter initialisation and conversion to and from the PLY layout.

A model is a plain ``dict[str, torch.nn.Parameter]`` with gsplat's keys, stored pre-activation as the
3DGS PLY stores them:

    means [N, 3]        centres
    scales [N, 3]       log of the per-axis standard deviations
    quats [N, 4]        rotations w x y z (any non-zero norm)
    opacities [N]       logits
    sh0 [N, 1, 3]       SH DC coefficient (rendering adds 0.5 after evaluating the SH)
    shN [N, K - 1, 3]   the remaining coefficients, K = (max_sh_degree + 1)^2

Densification strategies (``gsplat_py.strategy``) add and remove rows of every entry together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .rendering.limits import MAX_SH_DEGREE

__all__ = [
    "GaussianSplats",
    "INIT_TYPES",
    "ModelConfig",
    "Params",
    "PARAM_NAMES",
    "SH_C0",
    "init_params",
    "knn_mean_distance",
    "random_points",
    "rgb_to_sh",
    "params_to_splats",
    "splats_to_params",
    "render_colors",
]

PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")
INIT_TYPES = ("sfm", "random")
SH_C0 = 0.28209479177387814  # the degree-0 SH basis value, 1 / (2 sqrt(pi))

Params = dict[str, torch.nn.Parameter]


@dataclass
class ModelConfig:
    init: str = "sfm"  # "sfm": the COLMAP points; "random": random_init_count points in a cube
    sh_degree: int = 3  # maximum SH degree, reached one degree every sh_degree_interval steps
    sh_degree_interval: int = 1000
    init_opacity: float = 0.1
    init_scale: float = 1.0  # times the mean distance to the 3 nearest neighbours
    random_init_count: int = 100_000
    random_init_extent: float = 3.0  # cube half-size, times the scene scale

    def sh_degree_at(self, step: int) -> int:
        """The SH degree a model has after ``step`` steps: one degree more every ``sh_degree_interval``
        steps, up to ``sh_degree`` (3DGS's schedule)."""
        return min(step // self.sh_degree_interval, self.sh_degree)


_VALID_K = {(d + 1) ** 2: d for d in range(MAX_SH_DEGREE + 1)}  # SH coefficients per channel -> degree


@dataclass
class GaussianSplats:
    """N Gaussians in the parameterisation 3DGS trains and stores (float32 CPU tensors).

    Attributes:
        means: [N, 3] centres.
        quats: [N, 4] rotations as quaternions w x y z (any non-zero norm).
        log_scales: [N, 3] natural log of the per-axis standard deviations.
        logit_opacities: [N] opacities before the sigmoid.
        sh: [N, K, 3] SH coefficients, K = (sh_degree + 1)^2 in {1, 4, 9, 16}; ``sh[:, 0]`` is the DC term
            in the SH basis (rendering adds 0.5 after evaluating the SH).

    Construction does not validate (so fields can be replaced one at a time); :meth:`validate` does, and
    :func:`write_ply` calls it before touching the file system.
    """

    means: Tensor
    quats: Tensor
    log_scales: Tensor
    logit_opacities: Tensor
    sh: Tensor

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    def __len__(self) -> int:
        return self.num_gaussians

    @property
    def sh_degree(self) -> int:
        """The SH degree d with (d + 1)^2 == K; ValueError if K is not 1, 4, 9 or 16."""
        k = int(self.sh.shape[1]) if self.sh.dim() == 3 else -1
        if k not in _VALID_K:
            raise ValueError(
                f"sh has shape {list(self.sh.shape)}; expected [N, K, 3] with K in {sorted(_VALID_K)}"
            )
        return _VALID_K[k]

    def scales(self) -> Tensor:
        """[N, 3] activated scales, exp(log_scales)."""
        return torch.exp(self.log_scales)

    def opacities(self) -> Tensor:
        """[N] activated opacities, sigmoid(logit_opacities)."""
        return torch.sigmoid(self.logit_opacities)

    def validate(self) -> None:
        """Raise ValueError (TypeError for non-tensors) unless shapes agree, dtypes are floating and all
        values are finite. Does not check the dtype is float32 or the device is CPU; :func:`write_ply`
        converts."""
        shapes = {
            "means": (3,),
            "quats": (4,),
            "log_scales": (3,),
            "logit_opacities": (),
        }
        for name in list(shapes) + ["sh"]:
            t = getattr(self, name)
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if not t.is_floating_point():
                raise ValueError(f"{name} must have a floating-point dtype, got {t.dtype}")
        if self.means.dim() != 2 or self.means.shape[1] != 3:
            raise ValueError(f"means has shape {list(self.means.shape)}; expected [N, 3]")
        n = self.means.shape[0]
        for name, tail in shapes.items():
            t = getattr(self, name)
            if tuple(t.shape) != (n,) + tail:
                expected = "[" + ", ".join(["N"] + [str(s) for s in tail]) + "]"
                raise ValueError(
                    f"{name} has shape {list(t.shape)}; expected {expected} with N={n} (from means)"
                )
        if (
            self.sh.dim() != 3
            or self.sh.shape[0] != n
            or self.sh.shape[2] != 3
            or self.sh.shape[1] not in _VALID_K
        ):
            raise ValueError(
                f"sh has shape {list(self.sh.shape)}; expected [N, K, 3] with N={n} (from means) and "
                f"K in {sorted(_VALID_K)} (SH degree 0..{MAX_SH_DEGREE})"
            )
        for name in list(shapes) + ["sh"]:
            t = getattr(self, name).detach()
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                row = int(bad.reshape(n, -1).any(dim=1).nonzero()[0, 0])
                raise ValueError(f"{name} has a non-finite value (NaN or inf) at row {row}")


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """The DC coefficient whose rendered colour (SH_C0 * dc + 0.5) is ``rgb``."""
    return (rgb - 0.5) / SH_C0


def knn_mean_distance(points: Tensor, k: int = 3, chunk: int = 4096) -> Tensor:
    """[P] mean Euclidean distance from each point to its ``k`` nearest other points (exact, O(P^2)).

    Coincident points are common in SfM output; their zero distances would give zero-size Gaussians, so
    the caller clamps the result.
    """
    n = points.shape[0]
    if n <= 1:
        return points.new_ones(n)
    k = min(k, n - 1)
    pts = points.float()
    squared_norms = (pts * pts).sum(-1)
    out = torch.empty(n, dtype=pts.dtype)
    for start in range(0, n, chunk):
        block = pts[start : start + chunk]
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one matrix product per chunk instead of a [chunk, P, 3] tensor
        d2 = squared_norms[start : start + chunk, None] + squared_norms[None, :] - 2.0 * (block @ pts.T)
        rows = torch.arange(block.shape[0])
        d2[rows, rows + start] = float("inf")  # not its own neighbour
        nearest = torch.topk(d2, k, dim=1, largest=False).values.clamp_min(0.0)
        out[start : start + chunk] = nearest.sqrt().mean(dim=1)
    return out


def random_points(
    count: int, extent: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``count`` points uniform in the cube [-extent, extent]^3 with uniform random colours (gsplat's
    ``init_type="random"``)."""
    points = (torch.rand(count, 3, generator=generator) * 2.0 - 1.0) * extent
    colors = torch.rand(count, 3, generator=generator)
    return points, colors


def init_params(
    points: Tensor,
    colors: Tensor,
    sh_degree: int,
    init_opacity: float = 0.1,
    init_scale: float = 1.0,
) -> Params:
    """Gaussians at ``points`` [P, 3] with ``colors`` [P, 3] in [0, 1], as 3DGS initialises from SfM.

    Each Gaussian is isotropic with a radius of ``init_scale`` times the mean distance to its 3 nearest
    neighbours, has identity rotation, opacity ``init_opacity``, SH DC set to the point colour and all
    higher SH coefficients zero.
    """
    if points.ndim != 2 or points.shape[-1] != 3 or points.shape[0] == 0:
        raise ValueError(f"points: expected a non-empty [P, 3] tensor, got shape {list(points.shape)}")
    if colors.shape != points.shape:
        raise ValueError(f"colors: expected shape {list(points.shape)} (as points), got {list(colors.shape)}")
    if not 0.0 < init_opacity < 1.0:
        raise ValueError(f"init_opacity: expected a value in (0, 1), got {init_opacity}")
    n = points.shape[0]
    distance = knn_mean_distance(points).clamp_min(1e-7)
    num_rest = (sh_degree + 1) ** 2 - 1
    params = {
        "means": points.float().clone(),
        "scales": torch.log(distance * init_scale)[:, None].repeat(1, 3),
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        "opacities": torch.full((n,), math.log(init_opacity / (1.0 - init_opacity))),
        "sh0": rgb_to_sh(colors.float())[:, None, :].clone(),
        "shN": torch.zeros(n, num_rest, 3),
    }
    return {name: torch.nn.Parameter(value.contiguous()) for name, value in params.items()}


def render_colors(params: Params) -> Tensor:
    """[N, K, 3] SH coefficients in the layout ``rasterization`` takes."""
    if params["shN"].shape[1] == 0:
        return params["sh0"]
    return torch.cat([params["sh0"], params["shN"]], dim=1)


def params_to_splats(params: Params) -> GaussianSplats:
    """A detached float32 CPU copy in the PLY layout (a copy on the CPU too: later optimizer steps, which
    update the parameters in place, leave it as it was)."""

    def copy(tensor: Tensor) -> Tensor:
        return tensor.detach().to(device="cpu", dtype=torch.float32, copy=True)

    return GaussianSplats(
        means=copy(params["means"]),
        quats=copy(params["quats"]),
        log_scales=copy(params["scales"]),
        logit_opacities=copy(params["opacities"]),
        sh=copy(render_colors(params)),
    )


def splats_to_params(splats: GaussianSplats) -> Params:
    """Trainable parameters holding a copy of ``splats``."""
    splats.validate()
    values = {
        "means": splats.means,
        "scales": splats.log_scales,
        "quats": splats.quats,
        "opacities": splats.logit_opacities,
        "sh0": splats.sh[:, :1],
        "shN": splats.sh[:, 1:],
    }
    return {
        name: torch.nn.Parameter(value.detach().float().clone().contiguous())
        for name, value in values.items()
    }
