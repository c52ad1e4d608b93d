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
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .rendering import rasterization, rasterization_2dgs
from .rendering.limits import MAX_SH_DEGREE

__all__ = [
    "GaussianSplats",
    "INIT_TYPES",
    "MODEL_TYPES",
    "ModelConfig",
    "Params",
    "PARAM_NAMES",
    "SH_C0",
    "SH_DEGREE_OF_COUNT",
    "init_params",
    "knn_mean_distance",
    "model_type_comments",
    "model_type_from_comments",
    "rasterize_model",
    "random_points",
    "rgb_to_sh",
    "params_to_splats",
    "splats_to_params",
    "render_colors",
]

PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")
INIT_TYPES = ("sfm", "random")
# "3dgs": 3D Gaussians (rasterization); "2dgs": surfels, 2D Gaussian disks (rasterization_2dgs), whose third
# scale is kept (as gsplat keeps it) but not rendered, so files and strategies see one layout.
MODEL_TYPES = ("3dgs", "2dgs")
# The header comment (PLY, compressed PLY, SOG) that records a model's type; a file without it is 3DGS.
MODEL_TYPE_COMMENT = "gsplat_py model_type"
SH_C0 = 0.28209479177387814  # the degree-0 SH basis value, 1 / (2 sqrt(pi))

Params = dict[str, torch.nn.Parameter]


@dataclass
class ModelConfig:
    type: str = "3dgs"  # one of MODEL_TYPES: what the Gaussians are and which rasterizer renders them
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


SH_DEGREE_OF_COUNT = {
    (d + 1) ** 2: d for d in range(MAX_SH_DEGREE + 1)
}  # SH coefficients per channel -> degree


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
        if k not in SH_DEGREE_OF_COUNT:
            raise ValueError(
                f"sh has shape {list(self.sh.shape)}; expected [N, K, 3] with K in "
                f"{sorted(SH_DEGREE_OF_COUNT)}"
            )
        return SH_DEGREE_OF_COUNT[k]

    def with_sh_degree(self, degree: int) -> GaussianSplats:
        """The same Gaussians with their SH cut to ``degree`` (the coefficients of the higher bands dropped);
        ValueError unless 0 <= degree <= sh_degree."""
        if not 0 <= degree <= self.sh_degree:
            raise ValueError(f"SH degree {degree}: expected 0 to {self.sh_degree} (the model's degree)")
        return replace(self, sh=self.sh[:, : (degree + 1) ** 2].contiguous())

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
            or self.sh.shape[1] not in SH_DEGREE_OF_COUNT
        ):
            raise ValueError(
                f"sh has shape {list(self.sh.shape)}; expected [N, K, 3] with N={n} (from means) and "
                f"K in {sorted(SH_DEGREE_OF_COUNT)} (SH degree 0..{MAX_SH_DEGREE})"
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


def knn_mean_distance(points: Tensor, k: int = 3) -> Tensor:
    """[P] mean Euclidean distance from each point to its ``k`` nearest other points (float32; exact: the
    distances are computed in float64 and only the mean is rounded).

    A multi-resolution grid search (`_nearest_distinct`), not the O(P^2) comparison of every pair: 100,000
    random points take about a second. Coincident points count as neighbours at distance 0; they are common
    in SfM output, and their zero distances would give zero-size Gaussians, so the caller clamps the result.
    """
    n = points.shape[0]
    if n <= 1:
        return torch.ones(n)
    if not bool(torch.isfinite(points).all()):
        raise ValueError("points: expected finite coordinates")
    k = min(k, n - 1)
    unique, inverse, copies = torch.unique(
        points.detach().double().cpu(), dim=0, return_inverse=True, return_counts=True
    )
    # Each point's k nearest others: its other copies (distance 0), then its nearest distinct points, each as
    # often as it occurs; at most k of each is needed.
    slots = torch.arange(k)
    candidates = [torch.where(slots[None, :] < (copies[:, None] - 1), 0.0, math.inf).double()]
    distinct = min(k, len(unique) - 1)
    if distinct > 0:
        squared, neighbours = _nearest_distinct(unique, distinct)
        occurs = copies[neighbours]  # [U, distinct]
        repeated = torch.where(slots[None, None, :] < occurs[..., None], squared.sqrt()[..., None], math.inf)
        candidates.append(repeated.reshape(len(unique), distinct * k))
    nearest = torch.cat(candidates, dim=1).sort(dim=1).values[:, :k]
    return nearest.mean(dim=1).float()[inverse]


# The grid search visits at most this many (query, candidate) pairs at a time (~100 MB).
_KNN_PAIR_BUDGET = 1 << 21
_KNN_SAMPLE = 256  # points whose exact neighbour distances choose the first cell size
_KNN_FIRST_QUANTILE = 0.8  # the first cell size: most points finish in the first round
_KNN_MAX_CELLS_PER_AXIS = 1 << 20  # keeps the cell keys within int64


def _nearest_distinct(points: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(squared distances [U, k] ascending, indices [U, k]) of the k nearest other rows of ``points``
    (float64 [U, 3], distinct rows, U > k), exact.

    Each pending point compares itself with the points of the 3x3x3 grid cells around its own. Any point
    outside them is farther than the block's nearest face (at least one cell size), so a k-th candidate
    within that distance is the true k-th neighbour; the other points repeat the search with cells twice
    as large. The first size comes from a
    sample's neighbour distances, so most points finish in the first round; the last round has cells so
    large that every point is among the candidates."""
    count = len(points)
    origin = points.amin(dim=0)
    extent = float((points.amax(dim=0) - origin).max())
    cell = max(_sample_neighbour_distance(points, k), extent / _KNN_MAX_CELLS_PER_AXIS)
    squared = torch.full((count, k), math.inf, dtype=torch.float64)
    neighbours = torch.zeros((count, k), dtype=torch.int64)
    pending = torch.arange(count)
    offsets = torch.stack(torch.meshgrid(*[torch.arange(-1, 2)] * 3, indexing="ij"), dim=-1).reshape(27, 3)
    while len(pending) > 0:
        coords = torch.floor((points - origin) / cell).long() + 1  # >= 1: neighbour cells stay >= 0
        every_point_is_a_candidate = bool((coords.amax(dim=0) <= 2).all())
        dims = coords.amax(dim=0) + 2
        strides = torch.stack([dims[1] * dims[2], dims[2], torch.ones_like(dims[2])])
        keys = coords @ strides
        order = torch.argsort(keys)
        sorted_keys = keys[order]
        neighbour_keys = (coords[pending][:, None, :] + offsets[None]) @ strides  # [Q, 27]
        starts = torch.searchsorted(sorted_keys, neighbour_keys)
        lengths = torch.searchsorted(sorted_keys, neighbour_keys, right=True) - starts
        finished = []
        # How far each pending point is from the outside of its 3x3x3 block of cells (at least one cell),
        # less a slack for the rounding of the cell coordinates: no point outside the block is nearer.
        low = origin + (coords[pending] - 2) * cell
        reach = torch.minimum(points[pending] - low, low + 3.0 * cell - points[pending]).amin(dim=1)
        reach = (reach - 1e-6 * cell).clamp_min(0.0)
        for rows in _chunks_by_total(lengths.sum(dim=1), _KNN_PAIR_BUDGET):
            queries = pending[rows]
            best_squared, best_index = _k_nearest_candidates(
                points, queries, order, starts[rows], lengths[rows], k
            )
            done = (best_squared[:, -1] <= reach[rows] ** 2) | every_point_is_a_candidate
            squared[queries[done]] = best_squared[done]
            neighbours[queries[done]] = best_index[done]
            finished.append(rows[done])
        still = torch.ones(len(pending), dtype=torch.bool)
        still[torch.cat(finished)] = False
        pending = pending[still]
        cell *= 2.0
    return squared, neighbours


def _sample_neighbour_distance(points: Tensor, k: int) -> float:
    """A high quantile of the distance to the k-th nearest other point, over an even sample of the points."""
    sample = points[torch.linspace(0, len(points) - 1, min(len(points), _KNN_SAMPLE)).long()]
    kth = [
        torch.cdist(block, points).topk(k + 1, dim=1, largest=False).values[:, k]  # k + 1: itself at 0
        for block in sample.split(64)
    ]
    return float(torch.quantile(torch.cat(kth), _KNN_FIRST_QUANTILE))


def _chunks_by_total(sizes: Tensor, budget: int) -> list[Tensor]:
    """Consecutive runs of the indices of ``sizes`` whose sizes add up to about ``budget`` (at least one
    index each)."""
    ends = torch.cumsum(sizes, dim=0)
    groups = torch.div(ends - sizes, budget, rounding_mode="floor")
    _, run_lengths = torch.unique_consecutive(groups, return_counts=True)
    return list(torch.arange(len(sizes)).split(run_lengths.tolist()))


def _k_nearest_candidates(
    points: Tensor, queries: Tensor, order: Tensor, starts: Tensor, lengths: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """For each query, the k smallest squared distances to the points of its 27 cells (``starts`` and
    ``lengths`` [Q, 27] index ``order``, the points sorted by cell) other than itself, ascending, and
    their indices; inf where there are fewer than k."""
    flat_lengths = lengths.reshape(-1)
    run_starts = torch.cumsum(flat_lengths, dim=0) - flat_lengths
    within_run = torch.arange(int(flat_lengths.sum())) - torch.repeat_interleave(run_starts, flat_lengths)
    candidate = order[torch.repeat_interleave(starts.reshape(-1), flat_lengths) + within_run]
    per_query = lengths.sum(dim=1)
    first = torch.cumsum(per_query, dim=0) - per_query  # each query's candidates are consecutive
    query = torch.repeat_interleave(queries, per_query)
    difference = points[candidate] - points[query]
    squared = (difference * difference).sum(dim=1)
    squared[candidate == query] = math.inf
    best_squared = torch.full((len(queries), k), math.inf, dtype=torch.float64)
    best_index = torch.zeros((len(queries), k), dtype=torch.int64)
    # Queries with up to 2^b candidates go through one [queries, 2^b] table (padded with inf) and topk: no
    # sort of all the pairs, and at most twice the pairs' memory.
    width = 1
    while True:
        rows = torch.nonzero((per_query <= width) & (per_query > width // 2)).flatten()
        if len(rows) > 0:
            columns = torch.arange(width)
            present = columns[None, :] < per_query[rows, None]
            pair = (first[rows, None] + columns[None, :]).clamp_max(len(squared) - 1)
            table = torch.where(present, squared[pair], math.inf)
            size = min(k, width)
            values, picked = table.topk(size, dim=1, largest=False, sorted=True)
            best_squared[rows, :size] = values
            best_index[rows, :size] = candidate[pair.gather(1, picked)]
        if width >= int(per_query.max()):
            return best_squared, best_index
        width *= 2


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
    model_type: str = "3dgs",
) -> Params:
    """Gaussians at ``points`` [P, 3] with ``colors`` [P, 3] in [0, 1], as 3DGS initialises from SfM.

    Each Gaussian is isotropic with a radius of ``init_scale`` times the mean distance to its 3 nearest
    neighbours, has identity rotation, opacity ``init_opacity``, SH DC set to the point colour and all
    higher SH coefficients zero. A "2dgs" ``model_type`` gets random rotations instead (gsplat's and
    Inria's 2DGS: ``torch.rand`` quaternions, from torch's generator): surfels that all faced one way would
    be seen edge-on from every camera in their plane.
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
        "quats": torch.rand(n, 4)
        if model_type == "2dgs"
        else torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
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


def model_type_comments(model_type: str) -> list[str]:
    """The header comment lines recording ``model_type`` (none for "3dgs", what a file without them is)."""
    return [] if model_type == "3dgs" else [f"{MODEL_TYPE_COMMENT} {model_type}"]


def model_type_from_comments(comments: list[str] | None) -> str | None:
    """The model type a file's header comments record, None when they record none; ValueError (naming the
    line) for a type this version does not know."""
    for line in comments or []:
        if line.startswith(MODEL_TYPE_COMMENT + " "):
            value = line[len(MODEL_TYPE_COMMENT) + 1 :].strip()
            if value not in MODEL_TYPES:
                raise ValueError(f"comment {line!r}: expected a model type among {', '.join(MODEL_TYPES)}")
            return value
    return None


def rasterize_model(
    model_type: str,
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    render_mode: str = "RGB",
    camera_model: str = "pinhole",
    **options,
) -> tuple[Tensor, Tensor, dict]:
    """Render Gaussians of ``model_type`` with its rasterizer, as ``rasterization`` returns: (colors
    [C, H, W, X], alphas [C, H, W, 1], meta); ``options`` are both rasterizers' keywords (sh_degree,
    backgrounds, absgrad, packed, ...).

    A 2DGS render always renders the expected depth (its depth normals need it; the channel is dropped
    unless ``render_mode`` asks for it) and adds its other outputs to ``meta``: ``render_normals`` and
    ``surf_normals`` (world-space [C, H, W, 3]: the blended surfel normals, the normals of the expected
    depth), ``render_distort`` and ``render_median`` ([C, H, W, 1]); its densification gradient is
    ``meta["gradient_2dgs"]``. 2DGS renders pinhole cameras only (ValueError naming ``camera_model``).
    """
    if model_type == "3dgs":
        return rasterization(
            means,
            quats,
            scales,
            opacities,
            colors,
            viewmats,
            Ks,
            width,
            height,
            render_mode=render_mode,
            camera_model=camera_model,
            **options,
        )
    if model_type != "2dgs":
        raise ValueError(f"model_type: expected one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    if camera_model != "pinhole" or options.pop("radial_coeffs", None) is not None:
        raise ValueError(f"camera_model: 2DGS models render pinhole cameras only, got {camera_model!r}")
    sh_rest = options.pop("sh_rest", None)
    if sh_rest is not None:  # rasterization_2dgs takes gsplat's whole [..., N, K, 3] coefficients
        colors = torch.cat([colors, sh_rest], dim=-2)
    if options.pop("distributed", False):
        raise ValueError("distributed: 2DGS models render on one process (rasterization_2dgs has none)")
    if render_mode not in ("RGB", "RGB+ED"):
        raise ValueError(f"render_mode: 2DGS models render 'RGB' or 'RGB+ED', got {render_mode!r}")
    rendered, alphas, render_normals, surf_normals, render_distort, render_median, meta = rasterization_2dgs(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, render_mode="RGB+ED", **options
    )
    assert surf_normals is not None, "a depth render mode gives depth normals"
    meta = {
        **meta,
        "render_normals": render_normals,
        "surf_normals": surf_normals.reshape(render_normals.shape),
        "render_distort": render_distort,
        "render_median": render_median,
    }
    return (rendered if render_mode == "RGB+ED" else rendered[..., :-1]), alphas, meta
