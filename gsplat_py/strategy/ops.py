"""Building blocks of the densification strategies: ops that add, remove or edit Gaussians.

Every op takes

- ``params``: a dict (or ``nn.ParameterDict``) of per-Gaussian ``nn.Parameter`` s, all with first
  dimension N (``means`` [N,3], ``scales`` [N,3] log-scales, ``quats`` [N,4] wxyz, ``opacities`` [N]
  logits, ``sh0``, ``shN`` and any extra per-Gaussian keys, which are treated generically);
- ``optimizers``: one optimizer per trainable key (Adam in any variant: plain, ``foreach``, ``fused``),
  whose param group holds exactly that parameter;
- ``state``: the strategy's running state. Its per-Gaussian entries (tensors with first dimension N)
  follow every op; anything else in it is left alone.

An op that changes rows replaces each parameter with a new ``nn.Parameter`` in ``params`` and in its
optimizer's param group, and carries the optimizer state along row by row: kept rows keep their moments,
new rows start with zero moments, removed rows are dropped, scalar entries such as Adam's ``step`` are
kept. Randomness comes only from torch's global RNG.

The behaviour is that of ``gsplat.strategy.ops`` (gsplat 1.5); where it differs, the function says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

__all__ = [
    "update_param_with_optimizer",
    "duplicate",
    "split",
    "remove",
    "reset_opa",
    "relocate",
    "sample_add",
    "inject_noise_to_position",
    "compute_relocation",
    "binomial_table",
]

Params = dict[str, torch.nn.Parameter] | torch.nn.ParameterDict
Optimizers = dict[str, torch.optim.Optimizer]

# Split children shrink by this factor (3DGS, Kerbl et al. 2023: "divide their scale by a factor of 1.6").
SPLIT_SCALE_DIVISOR = 1.6


# --------------------------------------------------------------------------------------------------
# Generic plumbing
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def update_param_with_optimizer(
    param_fn: Callable[[str, Tensor], Tensor],
    optimizer_fn: Callable[[str, Tensor], Tensor],
    params: Params,
    optimizers: Optimizers,
    names: Iterable[str] | None = None,
) -> None:
    """Replace parameters by new ones and carry their optimizer state along.

    For each name (all keys of ``params`` by default), ``param_fn(name, old_param)`` returns the new
    values; they become a new ``nn.Parameter`` (same ``requires_grad``) in ``params[name]`` and in the
    param groups of ``optimizers[name]``, where it takes the old parameter's place. Each per-row entry of
    the old parameter's optimizer state (a tensor of the parameter's shape, e.g. Adam's ``exp_avg``,
    ``exp_avg_sq``, ``max_exp_avg_sq``) is replaced by ``optimizer_fn(state_key, value)``; other entries
    (``step``) are kept as they are. A parameter without optimizer must not require grad.

    Same contract as gsplat's ``_update_param_with_optimizer``, except that ``param_fn`` may return a
    plain tensor (it is wrapped here) and that ``optimizer_fn`` only sees per-row entries (gsplat passes
    every entry but ``step``).
    """
    names = list(params.keys()) if names is None else list(names)
    orphans = [name for name in names if params[name].requires_grad and name not in optimizers]
    if orphans:
        raise ValueError(f"params {orphans} require grad but have no optimizer")
    for name in names:
        param = params[name]
        new_param = torch.nn.Parameter(param_fn(name, param).detach(), requires_grad=param.requires_grad)
        params[name] = new_param
        optimizer = optimizers.get(name)
        if optimizer is None:
            continue
        param_state = optimizer.state.pop(param, None)
        if param_state is not None:
            for key, value in list(param_state.items()):
                if torch.is_tensor(value) and value.shape == param.shape:
                    param_state[key] = optimizer_fn(key, value)
            optimizer.state[new_param] = param_state
        for group in optimizer.param_groups:
            group["params"] = [new_param if p is param else p for p in group["params"]]


def _update_state_rows(state: dict, n_gaussians: int, fn: Callable[[Tensor], Tensor]) -> None:
    """Apply ``fn`` to the per-Gaussian tensors of ``state`` (first dimension ``n_gaussians``)."""
    for key, value in state.items():
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == n_gaussians:
            state[key] = fn(value)


def _num_gaussians(params: Params) -> int:
    return params["means"].shape[0]


def _check_mask(mask: Tensor, n_gaussians: int) -> None:
    if mask.dtype != torch.bool or mask.shape != (n_gaussians,):
        raise ValueError(
            f"mask: expected a bool tensor of shape [{n_gaussians}] (one entry per Gaussian), "
            f"got {mask.dtype} of shape {list(mask.shape)}"
        )


def _zero_rows(n_rows: int, like: Tensor) -> Tensor:
    return like.new_zeros((n_rows, *like.shape[1:]))


def _unit_quat_components(quats: Tensor) -> tuple[Tensor, ...]:
    """[N, 4] quaternions (w, x, y, z), any non-zero norm -> w, x, y, z [N] of unit norm, each contiguous."""
    # a matrix-vector product sums the squares far faster than a reduction over the size-4 last dim
    inv_norm = torch.matmul(quats * quats, quats.new_ones(4)).clamp_min_(1e-24).rsqrt_()
    return tuple(quats[:, i] * inv_norm for i in range(4))


def _rotate(
    quat: tuple[Tensor, ...], v: Sequence[Tensor] | Tensor, inverse: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Rotate the vectors with components v = (vx, vy, vz) by the unit quaternions quat = (w, x, y, z).

    q v q* = v + w t + u x t with u = (x, y, z), t = 2 u x v, written per component: on the CPU,
    contiguous [N] element-wise ops are many times faster than [N, 3, 3] matrices or strided [N, 3]
    ops. The inverse rotation uses the conjugate quaternion.
    """
    w, x, y, z = quat
    if inverse:
        x, y, z = -x, -y, -z
    vx, vy, vz = v
    tx, ty, tz = 2.0 * (y * vz - z * vy), 2.0 * (z * vx - x * vz), 2.0 * (x * vy - y * vx)
    return (
        vx + w * tx + (y * tz - z * ty),
        vy + w * ty + (z * tx - x * tz),
        vz + w * tz + (x * ty - y * tx),
    )


# --------------------------------------------------------------------------------------------------
# DefaultStrategy ops (3DGS adaptive density control)
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def duplicate(params: Params, optimizers: Optimizers, state: dict, mask: Tensor) -> None:
    """Clone the Gaussians selected by ``mask`` [N] bool (3DGS "clone").

    The copies are appended after the N existing rows, in index order, with the parameters and the
    per-Gaussian state of their originals and zero optimizer moments.
    """
    n_gaussians = _num_gaussians(params)
    _check_mask(mask, n_gaussians)
    selected = mask.nonzero(as_tuple=True)[0]

    update_param_with_optimizer(
        lambda name, p: torch.cat([p, p[selected]]),
        lambda key, v: torch.cat([v, _zero_rows(len(selected), v)]),
        params,
        optimizers,
    )
    _update_state_rows(state, n_gaussians, lambda v: torch.cat([v, v[selected]]))


@torch.no_grad()
def split(
    params: Params, optimizers: Optimizers, state: dict, mask: Tensor, revised_opacity: bool = False
) -> None:
    """Replace each Gaussian selected by ``mask`` [N] bool by two smaller ones (3DGS "split").

    The children's centres are two independent samples of the parent's 3D Gaussian (covariance
    R S^2 R^T), their scales are the parent's divided by 1.6, and every other parameter is the parent's;
    with ``revised_opacity`` each child gets opacity 1 - sqrt(1 - o) so that the pair covers what the
    parent did (Rota Bulo et al., "Revising Densification in Gaussian Splatting", arXiv:2404.06109).
    The result holds the unselected Gaussians first (in index order), then all first children, then all
    second children. Children start with zero optimizer moments and copy the parent's per-Gaussian state.
    """
    n_gaussians = _num_gaussians(params)
    _check_mask(mask, n_gaussians)
    selected = mask.nonzero(as_tuple=True)[0]
    kept = (~mask).nonzero(as_tuple=True)[0]

    means = params["means"]
    scales = torch.exp(params["scales"][selected])
    unit_samples = torch.randn((2, len(selected), 3), dtype=means.dtype, device=means.device)
    quat = _unit_quat_components(params["quats"][selected])
    # R S z has covariance R S^2 R^T, the parent's
    offsets = torch.stack(_rotate(quat, (scales * unit_samples).unbind(-1)), dim=-1)  # [2, M, 3]

    def children(name: str, p: Tensor) -> Tensor:
        parents = p[selected]
        if name == "means":
            return (parents + offsets).reshape(-1, 3)
        if name == "scales":
            parents = parents - math.log(SPLIT_SCALE_DIVISOR)
        elif name == "opacities" and revised_opacity:
            parents = torch.logit(1.0 - torch.sqrt(1.0 - torch.sigmoid(parents)))
        return parents.repeat(2, *[1] * (p.dim() - 1))

    update_param_with_optimizer(
        lambda name, p: torch.cat([p[kept], children(name, p)]),
        lambda key, v: torch.cat([v[kept], _zero_rows(2 * len(selected), v)]),
        params,
        optimizers,
    )
    _update_state_rows(
        state, n_gaussians, lambda v: torch.cat([v[kept], v[selected].repeat(2, *[1] * (v.dim() - 1))])
    )


@torch.no_grad()
def remove(params: Params, optimizers: Optimizers, state: dict, mask: Tensor) -> None:
    """Delete the Gaussians selected by ``mask`` [N] bool; the others keep their order and state."""
    n_gaussians = _num_gaussians(params)
    _check_mask(mask, n_gaussians)
    kept = (~mask).nonzero(as_tuple=True)[0]

    update_param_with_optimizer(lambda name, p: p[kept], lambda key, v: v[kept], params, optimizers)
    _update_state_rows(state, n_gaussians, lambda v: v[kept])


@torch.no_grad()
def reset_opa(params: Params, optimizers: Optimizers, state: dict, value: float) -> None:
    """Clamp every opacity to at most ``value`` (post-sigmoid) and zero the opacity optimizer moments.

    This is the 3DGS periodic opacity reset. ``state`` is unused (the signature is shared by all ops).
    """
    if not 0.0 < value < 1.0:
        raise ValueError(f"value: expected an opacity in (0, 1), got {value}")
    max_logit = math.log(value / (1.0 - value))

    update_param_with_optimizer(
        lambda name, p: p.clamp(max=max_logit),
        lambda key, v: torch.zeros_like(v),
        params,
        optimizers,
        names=["opacities"],
    )


# --------------------------------------------------------------------------------------------------
# MCMCStrategy ops (Kheradmand et al., "3D Gaussian Splatting as Markov Chain Monte Carlo", 2024)
# --------------------------------------------------------------------------------------------------


def binomial_table(n_max: int = 51) -> Tensor:
    """[n_max, n_max] float32 table of binomial coefficients C(n, k) (zero for k > n), as gsplat's
    ``MCMCStrategy.initialize_state`` builds it."""
    table = torch.zeros((n_max, n_max))
    for n in range(n_max):
        for k in range(n + 1):
            table[n, k] = math.comb(n, k)
    return table


def compute_relocation(
    opacities: Tensor, scales: Tensor, ratios: Tensor, binoms: Tensor
) -> tuple[Tensor, Tensor]:
    """Opacity and scale of each of ``ratios`` Gaussians that together replace one (3DGS-MCMC eq. 9).

    Args:
        opacities: [M] opacities (post-sigmoid) of the Gaussians being shared out.
        scales: [M, 3] their scales (linear, not log).
        ratios: [M] integer number of Gaussians each one becomes (itself included); clamped to
            [1, n_max].
        binoms: [n_max, n_max] binomial table (``binomial_table``).

    Returns:
        ``(new_opacities [M], new_scales [M, 3])`` with new_opacity = 1 - (1 - o)^(1/n), so that n
        copies composite to the original opacity, and the scale corrected so that the n copies rendered
        together approximate the original:
        new_scale = o / sum_{i=1..n} sum_{k=0..i-1} C(i-1, k) (-1)^k new_o^(k+1) / sqrt(k+1) * scale.

    The formula of gsplat's CUDA ``compute_relocation`` kernel, evaluated in float64 (it is an
    alternating sum) and returned in the input dtypes.
    """
    n_max = binoms.shape[0]
    ratios = ratios.clamp(1, n_max).long()
    opacities64 = opacities.double()
    new_opacities = 1.0 - torch.pow(1.0 - opacities64, 1.0 / ratios.double())

    k = torch.arange(n_max, dtype=torch.float64, device=opacities.device)
    # sum_{i=1..n} C(i-1, k) is row n-1 of the table's cumulative sum (the table is zero for k > i-1).
    summed_binoms = binoms.to(device=opacities.device, dtype=torch.float64).cumsum(0)[
        ratios - 1
    ]  # [M, n_max]
    signs_over_sqrt = (1.0 - 2.0 * (k % 2)) / torch.sqrt(k + 1.0)
    powers = torch.pow(new_opacities[:, None], k + 1.0)  # [M, n_max]
    denominators = (summed_binoms * signs_over_sqrt * powers).sum(-1)
    new_scales = scales.double() * (opacities64 / denominators)[:, None]
    return new_opacities.to(opacities.dtype), new_scales.to(scales.dtype)


def _shared_out(
    params: Params, opacities: Tensor, sources: Tensor, binoms: Tensor, min_opacity: float
) -> tuple[Tensor, Tensor]:
    """Logit opacities and log scales of ``sources`` [M] once each is shared with all the copies of it
    that ``sources`` asks for (a source listed k times becomes k + 1 Gaussians); ``opacities`` [N] are
    the current post-sigmoid opacities."""
    copies = torch.bincount(sources, minlength=opacities.shape[0])[sources]
    new_opacities, new_scales = compute_relocation(
        opacities[sources], torch.exp(params["scales"][sources]), copies + 1, binoms
    )
    eps = torch.finfo(new_opacities.dtype).eps
    new_opacities = new_opacities.clamp(min=min_opacity, max=1.0 - eps)
    return torch.logit(new_opacities), torch.log(new_scales)


def _with_shared_sources(
    name: str, p: Tensor, sources: Tensor, logit_opacities: Tensor, log_scales: Tensor
) -> Tensor:
    """A copy of parameter ``p`` whose ``sources`` rows hold the shared-out opacity / scale."""
    p = p.clone()
    if name == "opacities":
        p[sources] = logit_opacities.reshape(-1, *p.shape[1:])
    elif name == "scales":
        p[sources] = log_scales
    return p


@torch.no_grad()
def relocate(
    params: Params,
    optimizers: Optimizers,
    state: dict,
    mask: Tensor,
    binoms: Tensor,
    min_opacity: float = 0.005,
) -> None:
    """Move the dead Gaussians (``mask`` [N] bool) onto live ones (3DGS-MCMC relocation).

    Each dead Gaussian picks a live source with probability proportional to opacity (with
    replacement) and becomes a copy of it; a source picked k times and its k copies all get the
    opacity and scale of ``compute_relocation`` with n = k + 1 (opacity clamped to
    [min_opacity, 1 - eps]). N is unchanged. The optimizer moments and per-Gaussian state of the
    sources and of the relocated rows are reset to zero: gsplat and the original code reset only the
    sources', but a relocated row's moments belong to the dead Gaussian it replaces.
    """
    n_gaussians = _num_gaussians(params)
    _check_mask(mask, n_gaussians)
    dead = mask.nonzero(as_tuple=True)[0]
    alive = (~mask).nonzero(as_tuple=True)[0]
    if len(dead) == 0:
        return
    if len(alive) == 0:
        raise ValueError("relocate: every Gaussian is marked dead, there is no live one to move them to")

    opacities = torch.sigmoid(params["opacities"].flatten())
    sources = alive[torch.multinomial(opacities[alive], len(dead), replacement=True)]
    logit_opacities, log_scales = _shared_out(params, opacities, sources, binoms, min_opacity)
    reset_rows = torch.cat([sources, dead])

    def relocated(name: str, p: Tensor) -> Tensor:
        p = _with_shared_sources(name, p, sources, logit_opacities, log_scales)
        p[dead] = p[sources]
        return p

    def reset_moments(key: str, v: Tensor) -> Tensor:
        v[reset_rows] = 0
        return v

    update_param_with_optimizer(relocated, reset_moments, params, optimizers)
    _update_state_rows(state, n_gaussians, lambda v: v.index_fill(0, reset_rows, 0))


@torch.no_grad()
def sample_add(
    params: Params,
    optimizers: Optimizers,
    state: dict,
    n: int,
    binoms: Tensor,
    min_opacity: float = 0.005,
) -> None:
    """Append ``n`` new Gaussians, copies of sources drawn in proportion to opacity (3DGS-MCMC growth).

    Sources are drawn from all N Gaussians with replacement; a source drawn k times and its k copies
    get the opacity and scale of ``compute_relocation`` with n = k + 1 (opacity clamped to
    [min_opacity, 1 - eps]). The copies are appended in draw order with zero optimizer moments and zero
    per-Gaussian state; the sources' moments are reset too, as in the original 3DGS-MCMC code (gsplat
    keeps them although the sources' opacity and scale change).
    """
    if n < 0:
        raise ValueError(f"n: expected the number of Gaussians to add (>= 0), got {n}")
    if n == 0:
        return
    n_gaussians = _num_gaussians(params)
    opacities = torch.sigmoid(params["opacities"].flatten())
    sources = torch.multinomial(opacities, n, replacement=True)
    logit_opacities, log_scales = _shared_out(params, opacities, sources, binoms, min_opacity)

    def grown(name: str, p: Tensor) -> Tensor:
        p = _with_shared_sources(name, p, sources, logit_opacities, log_scales)
        return torch.cat([p, p[sources]])

    def reset_and_grow_moments(key: str, v: Tensor) -> Tensor:
        v[sources] = 0
        return torch.cat([v, _zero_rows(n, v)])

    update_param_with_optimizer(grown, reset_and_grow_moments, params, optimizers)
    _update_state_rows(state, n_gaussians, lambda v: torch.cat([v, _zero_rows(n, v)]))


@torch.no_grad()
def inject_noise_to_position(params: Params, optimizers: Optimizers, state: dict, scaler: float) -> None:
    """Perturb ``params["means"]`` in place with noise shaped by each Gaussian's covariance (3DGS-MCMC).

    means += Sigma @ (z * scaler * sigmoid(100 * ((1 - opacity) - 0.995))), z ~ N(0, I) drawn as a
    [3, N] tensor (z[:, i] is Gaussian i's), with
    Sigma = R S^2 R^T. The gate lets (nearly) transparent Gaussians explore while leaving opaque ones
    where they are (~0.6 at opacity 0, ~0.5 at 0.005, ~1e-4 at 0.1). ``scaler`` is the current means
    learning rate times ``noise_lr``. ``optimizers`` and ``state`` are unused: the means keep their
    optimizer state.
    """
    means = params["means"]
    opacities = torch.sigmoid(params["opacities"].flatten())
    gate = torch.sigmoid(100.0 * ((1.0 - opacities) - 0.995))
    # Sigma z = R (S^2 (R^T z)), without forming Sigma, component by component (see _rotate).
    noise = torch.randn((3, means.shape[0]), dtype=means.dtype, device=means.device).mul_(gate * scaler)
    quat = _unit_quat_components(params["quats"])
    variances = torch.exp(2.0 * params["scales"])
    local = [c.mul_(variances[:, i]) for i, c in enumerate(_rotate(quat, noise, inverse=True))]
    means.add_(torch.stack(_rotate(quat, local), dim=-1))
