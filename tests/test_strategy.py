"""Tests of gsplat_py.strategy: the row-level ops, DefaultStrategy, MCMCStrategy, both driven by real renders.

Rows are tracked through the ops by an extra per-Gaussian parameter ``features`` whose first column is
the row's original index, so a wrong gather index changes which ids come out and fails the test.
"""

import math

import pytest
import torch
from conftest import make_scene
from torch import nn

import gsplat_py
from gsplat_py.strategy import (
    DefaultStrategy,
    MCMCStrategy,
    Strategy,
    binomial_table,
    compute_relocation,
    duplicate,
    inject_noise_to_position,
    relocate,
    remove,
    reset_opa,
    sample_add,
    split,
    update_param_with_optimizer,
)

N = 50
ADAM_VARIANTS = {"fused": dict(fused=True), "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}
MOMENTS = ("exp_avg", "exp_avg_sq")


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def make_params(n=N, sh_degree=1, seed=0, dtype=torch.float32, opacity_range=(0.05, 0.95)):
    """Random Gaussians with gsplat's keys plus ``features`` [n, 3] whose column 0 is the row index."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=dtype)

    lo, hi = opacity_range
    values = {
        "means": torch.randn(n, 3, generator=g, dtype=dtype),
        "scales": torch.log(0.02 + 0.2 * rand(n, 3)),
        "quats": torch.randn(n, 4, generator=g, dtype=dtype),
        "opacities": torch.logit(lo + (hi - lo) * rand(n)),
        "sh0": torch.randn(n, 1, 3, generator=g, dtype=dtype),
        "shN": torch.randn(n, (sh_degree + 1) ** 2 - 1, 3, generator=g, dtype=dtype),
        "features": torch.cat([torch.arange(n, dtype=dtype)[:, None], rand(n, 2)], dim=1),
    }
    return {name: nn.Parameter(value) for name, value in values.items()}


def optimizer_step(params, optimizers, seed):
    g = torch.Generator().manual_seed(seed)
    for name, param in params.items():
        param.grad = torch.randn(param.shape, generator=g, dtype=param.dtype)
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)


def make_optimizers(params, variant="fused"):
    """One Adam per key, after one real step so that every moment is non-zero."""
    optimizers = {
        name: torch.optim.Adam([p], lr=1e-3, **ADAM_VARIANTS[variant]) for name, p in params.items()
    }
    optimizer_step(params, optimizers, seed=100)
    return optimizers


def snapshot(params, optimizers):
    """Copies of every parameter and of its optimizer state, by key."""
    return {
        name: {"param": p.detach().clone(), **{k: v.clone() for k, v in optimizers[name].state[p].items()}}
        for name, p in params.items()
    }


def ids(params):
    return params["features"][:, 0].detach().round().long()  # optimizer steps move it by ~1e-3


def assert_consistent(params, optimizers, n, before):
    """Shapes, param-group identity and the kept Adam step of every key; then a real optimizer step."""
    Strategy().check_sanity(params, optimizers)
    for name, p in params.items():
        assert isinstance(p, nn.Parameter) and p.requires_grad
        assert p.shape == (n, *before[name]["param"].shape[1:])
        (group,) = optimizers[name].param_groups
        assert group["params"][0] is p
        state = optimizers[name].state[p]
        for key in MOMENTS:
            assert state[key].shape == p.shape and state[key].dtype == p.dtype
        assert torch.equal(state["step"], before[name]["step"])
    old = {name: p.detach().clone() for name, p in params.items()}
    optimizer_step(params, optimizers, seed=101)
    for name, p in params.items():
        if p.numel() > 0:
            assert not torch.equal(p.detach(), old[name]), f"optimizer step did not update {name}"


def assert_rows_equal(
    params, optimizers, before, new_rows, old_rows, names=None, entries=("param",) + MOMENTS
):
    """Rows ``new_rows`` now hold exactly what rows ``old_rows`` held (parameters and moments)."""
    for name in names or params:
        p = params[name]
        now = {"param": p.detach(), **optimizers[name].state[p]}
        for entry in entries:
            assert torch.equal(now[entry][new_rows], before[name][entry][old_rows]), f"{name}.{entry}"


def assert_zero_moments(params, optimizers, rows, names=None):
    for name in names or params:
        state = optimizers[name].state[params[name]]
        for key in MOMENTS:
            assert torch.all(state[key][rows] == 0), f"{name}.{key}"


def quat_rotate(quats, vectors):
    """Rotate vectors [N,3] by quaternions [N,4] (wxyz, any norm) as q v q^-1, independently of the ops."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, u = q[:, :1], q[:, 1:]
    t = 2.0 * torch.linalg.cross(u, vectors, dim=-1)
    return vectors + w * t + torch.linalg.cross(u, t, dim=-1)


def covariance_times(quats, scales, vectors):
    """R S^2 R^T v, with R applied through quaternion rotations."""
    conjugate = quats * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=quats.dtype)
    return quat_rotate(quats, scales**2 * quat_rotate(conjugate, vectors))


def per_gaussian_state(n, seed=7):
    g = torch.Generator().manual_seed(seed)
    return {
        "grad2d": torch.rand(n, generator=g),
        "count": torch.randint(0, 5, (n,), generator=g).float(),
        "radii": torch.rand(n, generator=g),
        "scene_scale": 2.5,
        "not_per_gaussian": torch.arange(7.0),
    }


def fake_info(grads, radii, width, height, absgrads=None):
    """A rasterization meta dict with hand-made means2d gradients [C, N, 2] and radii [C, N, 2]."""
    means2d = torch.zeros(grads.shape, dtype=grads.dtype, requires_grad=True)
    means2d.grad = grads
    if absgrads is not None:
        means2d.absgrad = absgrads
    return {
        "means2d": means2d,
        "radii": radii.to(torch.int32),
        "width": width,
        "height": height,
        "n_cameras": grads.shape[0],
    }


# --------------------------------------------------------------------------------------------------
# Generic plumbing
# --------------------------------------------------------------------------------------------------


def test_update_param_with_optimizer_only_named_keys_and_frozen_params():
    params = make_params()
    params["frozen"] = nn.Parameter(torch.randn(N, 2), requires_grad=False)
    optimizers = make_optimizers({k: v for k, v in params.items() if k != "frozen"})
    untouched, frozen = params["quats"], params["frozen"].detach().clone()
    before = snapshot({"means": params["means"]}, optimizers)["means"]
    update_param_with_optimizer(
        lambda name, p: p * 2, lambda key, v: v * 3, params, optimizers, names=["means", "frozen"]
    )
    assert params["quats"] is untouched
    assert not params["frozen"].requires_grad and torch.equal(params["frozen"], 2 * frozen)
    (group,) = optimizers["means"].param_groups
    assert group["params"] == [params["means"]]
    state = optimizers["means"].state[params["means"]]
    assert torch.equal(params["means"], 2 * before["param"])
    assert all(torch.equal(state[key], 3 * before[key]) for key in MOMENTS)
    assert torch.equal(state["step"], before["step"])

    params["orphan"] = nn.Parameter(torch.randn(N))
    means = params["means"]
    with pytest.raises(ValueError, match="orphan"):  # checked before anything is replaced
        update_param_with_optimizer(
            lambda n, p: p, lambda k, v: v, params, optimizers, names=["means", "orphan"]
        )
    assert params["means"] is means


def test_update_param_with_optimizer_before_first_step():
    params = make_params()
    optimizers = {name: torch.optim.Adam([p], fused=True) for name, p in params.items()}
    duplicate(params, optimizers, {}, torch.arange(N) < 3)
    assert len(params["means"]) == N + 3
    optimizer_step(params, optimizers, seed=0)
    assert optimizers["means"].state[params["means"]]["exp_avg"].shape == (N + 3, 3)


def test_ops_accept_a_parameter_dict():
    params = nn.ParameterDict(make_params())
    optimizers = make_optimizers(params)
    before = snapshot(params, optimizers)
    duplicate(params, optimizers, {}, torch.arange(N) < 4)
    remove(params, optimizers, {}, torch.arange(N + 4) % 2 == 1)
    assert torch.equal(ids(params), torch.tensor(list(range(0, N, 2)) + [0, 2]))
    assert_consistent(params, optimizers, N // 2 + 2, before)


def test_check_sanity_rejects_broken_conventions():
    params = make_params()
    optimizers = make_optimizers(params)
    Strategy().check_sanity(params, optimizers)
    DefaultStrategy().check_sanity(params, optimizers)
    MCMCStrategy().check_sanity(params, optimizers)
    with pytest.raises(ValueError, match="quats"):
        Strategy().check_sanity({k: v for k, v in params.items() if k != "quats"}, optimizers)
    with pytest.raises(ValueError, match="trainable"):
        Strategy().check_sanity(params, {k: v for k, v in optimizers.items() if k != "sh0"})
    wrong_rows = dict(params, features=nn.Parameter(torch.zeros(N + 1, 2)))
    with pytest.raises(ValueError, match="features"):
        Strategy().check_sanity(wrong_rows, optimizers)
    shared = dict(optimizers, sh0=optimizers["shN"])
    with pytest.raises(ValueError, match="sh0"):
        Strategy().check_sanity(params, shared)


def test_mask_must_be_bool_per_gaussian():
    params = make_params()
    optimizers = make_optimizers(params)
    with pytest.raises(ValueError, match="mask"):
        remove(params, optimizers, {}, torch.zeros(N - 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        duplicate(params, optimizers, {}, torch.zeros(N, dtype=torch.long))


# --------------------------------------------------------------------------------------------------
# DefaultStrategy ops
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(ADAM_VARIANTS))
@pytest.mark.parametrize("sh_degree", [0, 1])
def test_duplicate(variant, sh_degree):
    params = make_params(sh_degree=sh_degree)
    optimizers = make_optimizers(params, variant)
    state = per_gaussian_state(N)
    before, state_before = snapshot(params, optimizers), dict(state)
    mask = torch.rand(N, generator=torch.Generator().manual_seed(3)) < 0.3
    selected = mask.nonzero()[:, 0]
    k = len(selected)
    assert 0 < k < N

    duplicate(params, optimizers, state, mask)

    originals = torch.arange(N)
    assert torch.equal(ids(params), torch.cat([originals, selected]))
    assert_rows_equal(params, optimizers, before, originals, originals)
    assert_rows_equal(params, optimizers, before, torch.arange(N, N + k), selected, entries=("param",))
    assert_zero_moments(params, optimizers, torch.arange(N, N + k))
    for key in ("grad2d", "count", "radii"):
        assert torch.equal(state[key], torch.cat([state_before[key], state_before[key][selected]]))
    assert state["scene_scale"] == 2.5 and state["not_per_gaussian"] is state_before["not_per_gaussian"]
    assert_consistent(params, optimizers, N + k, before)


@pytest.mark.parametrize("variant", list(ADAM_VARIANTS))
@pytest.mark.parametrize("sh_degree", [0, 1])
@pytest.mark.parametrize("revised_opacity", [False, True])
def test_split(variant, sh_degree, revised_opacity):
    params = make_params(sh_degree=sh_degree)
    optimizers = make_optimizers(params, variant)
    state = per_gaussian_state(N)
    before, state_before = snapshot(params, optimizers), dict(state)
    mask = torch.rand(N, generator=torch.Generator().manual_seed(4)) < 0.3
    selected, kept = mask.nonzero()[:, 0], (~mask).nonzero()[:, 0]
    k = len(selected)
    assert 0 < k < N

    split(params, optimizers, state, mask, revised_opacity=revised_opacity)

    n_kept = N - k
    first, second = torch.arange(n_kept, n_kept + k), torch.arange(n_kept + k, n_kept + 2 * k)
    children = torch.cat([first, second])
    assert torch.equal(ids(params), torch.cat([kept, selected, selected]))  # parents removed
    assert_rows_equal(params, optimizers, before, torch.arange(n_kept), kept)
    assert_zero_moments(params, optimizers, children)
    copied = ["quats", "sh0", "shN", "features"] + ([] if revised_opacity else ["opacities"])
    for rows in (first, second):
        assert_rows_equal(params, optimizers, before, rows, selected, names=copied, entries=("param",))
        torch.testing.assert_close(
            torch.exp(params["scales"][rows]), torch.exp(before["scales"]["param"][selected]) / 1.6
        )
        parent_opacity = torch.sigmoid(before["opacities"]["param"][selected])
        child_opacity = torch.sigmoid(params["opacities"][rows])
        if revised_opacity:  # two children composite to the parent's opacity
            torch.testing.assert_close(1 - (1 - child_opacity) ** 2, parent_opacity)
        # the children's centres are random draws near the parent, different for the two children
        offsets = (params["means"][rows] - before["means"]["param"][selected]).detach()
        parent_size = torch.exp(before["scales"]["param"][selected]).amax(-1, keepdim=True)
        assert torch.all(offsets.abs() < 6 * parent_size) and torch.all(offsets != 0)
    assert not torch.equal(params["means"][first], params["means"][second])
    for key in ("grad2d", "count", "radii"):
        old = state_before[key]
        assert torch.equal(state[key], torch.cat([old[kept], old[selected], old[selected]]))
    assert_consistent(params, optimizers, N + k, before)


def test_split_children_sample_the_parent_gaussian():
    """Children of many identical parents: offsets have mean 0 and covariance R S^2 R^T, independently."""
    m = 4000
    dtype = torch.float64
    quat = torch.tensor([0.8, 0.3, -0.5, 0.2], dtype=dtype) * 1.7
    scale = torch.tensor([0.3, 0.1, 0.02], dtype=dtype)
    centre = torch.tensor([1.0, -2.0, 3.0], dtype=dtype)
    params = {
        "means": nn.Parameter(centre.repeat(m, 1)),
        "scales": nn.Parameter(torch.log(scale).repeat(m, 1)),
        "quats": nn.Parameter(quat.repeat(m, 1)),
        "opacities": nn.Parameter(torch.zeros(m, dtype=dtype)),
    }
    optimizers = {name: torch.optim.Adam([p]) for name, p in params.items()}
    torch.manual_seed(0)
    split(params, optimizers, {}, torch.ones(m, dtype=torch.bool))

    offsets = (params["means"].detach() - centre).reshape(2, m, 3)
    flat = offsets.reshape(-1, 3)
    n_samples = flat.shape[0]
    assert torch.all(flat.mean(0).abs() < 5 * scale.max() / math.sqrt(n_samples))
    basis = torch.eye(3, dtype=dtype)
    expected_cov = torch.stack([covariance_times(quat[None], scale[None], e[None])[0] for e in basis])
    empirical_cov = flat.T @ flat / n_samples
    assert (empirical_cov - expected_cov).abs().max() < 0.1 * scale.max() ** 2
    # the transposed rotation would give a clearly different covariance
    conjugate = quat * torch.tensor([1.0, -1, -1, -1], dtype=dtype)
    wrong_cov = torch.stack([covariance_times(conjugate[None], scale[None], e[None])[0] for e in basis])
    assert (empirical_cov - wrong_cov).abs().max() > 0.3 * scale.max() ** 2
    cross_cov = offsets[0].T @ offsets[1] / m
    assert cross_cov.abs().max() < 0.1 * scale.max() ** 2


@pytest.mark.parametrize("variant", list(ADAM_VARIANTS))
@pytest.mark.parametrize("sh_degree", [0, 1])
def test_remove(variant, sh_degree):
    params = make_params(sh_degree=sh_degree)
    optimizers = make_optimizers(params, variant)
    state = per_gaussian_state(N)
    before, state_before = snapshot(params, optimizers), dict(state)
    mask = torch.rand(N, generator=torch.Generator().manual_seed(5)) < 0.4
    kept = (~mask).nonzero()[:, 0]

    remove(params, optimizers, state, mask)

    assert torch.equal(ids(params), kept)
    assert_rows_equal(params, optimizers, before, torch.arange(len(kept)), kept)
    for key in ("grad2d", "count", "radii"):
        assert torch.equal(state[key], state_before[key][kept])
    assert state["not_per_gaussian"] is state_before["not_per_gaussian"]
    assert_consistent(params, optimizers, len(kept), before)


@pytest.mark.parametrize("variant", list(ADAM_VARIANTS))
def test_reset_opa_clamps_opacities_and_zeroes_their_moments(variant):
    params = make_params()
    optimizers = make_optimizers(params, variant)
    before = snapshot(params, optimizers)
    others = {name: p for name, p in params.items() if name != "opacities"}
    old_opacity = torch.sigmoid(before["opacities"]["param"])
    low = old_opacity < 0.1
    assert 0 < int(low.sum()) < N

    reset_opa(params, optimizers, {}, value=0.1)

    new_opacity = torch.sigmoid(params["opacities"].detach())
    assert torch.equal(params["opacities"][low], before["opacities"]["param"][low])  # untouched below
    torch.testing.assert_close(new_opacity[~low], torch.full_like(new_opacity[~low], 0.1))
    assert_zero_moments(params, optimizers, torch.arange(N), names=["opacities"])
    for name, p in others.items():
        assert params[name] is p
    assert_rows_equal(params, optimizers, before, torch.arange(N), torch.arange(N), names=list(others))
    with pytest.raises(ValueError, match="value"):
        reset_opa(params, optimizers, {}, value=1.0)
    assert_consistent(params, optimizers, N, before)


# --------------------------------------------------------------------------------------------------
# MCMC ops
# --------------------------------------------------------------------------------------------------


def relocation_oracle(opacity, n):
    """Eq. 9 of 3DGS-MCMC, term by term in Python floats: (new opacity, scale factor)."""
    new_opacity = 1.0 - (1.0 - opacity) ** (1.0 / n)
    denominator = sum(
        math.comb(i - 1, k) * (-1) ** k * new_opacity ** (k + 1) / math.sqrt(k + 1)
        for i in range(1, n + 1)
        for k in range(i)
    )
    return new_opacity, opacity / denominator


def test_binomial_table():
    table = binomial_table()
    assert table.shape == (51, 51)
    assert table[50, 25] == math.comb(50, 25) and table[7, 3] == 35 and table[3, 4] == 0


def test_compute_relocation_matches_equation_9():
    binoms = binomial_table()
    opacities = torch.tensor([0.006, 0.05, 0.3, 0.7, 0.95, 0.999])
    scales = torch.rand(len(opacities), 3, generator=torch.Generator().manual_seed(0)) + 0.1
    for n in (1, 2, 3, 7, 20, 51):
        ratios = torch.full((len(opacities),), n)
        new_opacities, new_scales = compute_relocation(opacities, scales, ratios, binoms)
        assert new_opacities.dtype == opacities.dtype and new_scales.dtype == scales.dtype
        for i, o in enumerate(opacities.tolist()):
            expected_opacity, factor = relocation_oracle(o, n)
            assert new_opacities[i].item() == pytest.approx(expected_opacity, rel=1e-5)
            torch.testing.assert_close(new_scales[i], scales[i] * factor, rtol=1e-5, atol=0)
        # n copies composite back to the original opacity
        composite = 1 - (1 - new_opacities.double()) ** n
        torch.testing.assert_close(composite, opacities.double(), rtol=1e-5, atol=1e-7)


def test_compute_relocation_identity_for_one_and_clamps_ratios():
    binoms = binomial_table()
    g = torch.Generator().manual_seed(0)
    opacities, scales = torch.rand(20, generator=g) * 0.98 + 0.01, torch.rand(20, 3, generator=g)
    ones = torch.ones(20, dtype=torch.long)
    new_opacities, new_scales = compute_relocation(opacities, scales, ones, binoms)
    torch.testing.assert_close(new_opacities, opacities)
    torch.testing.assert_close(new_scales, scales)
    # n = 2 in closed form: denominator 2a - a^2 / sqrt(2)
    a = 1 - torch.sqrt(1 - opacities.double())
    _, doubled = compute_relocation(opacities, scales, 2 * ones, binoms)
    factor = opacities / (2 * a - a**2 / math.sqrt(2))
    torch.testing.assert_close(doubled.double(), scales.double() * factor[:, None])
    # beyond the table: as many as it holds, and 0 counts as 1
    beyond, at_most = (compute_relocation(opacities, scales, n * ones, binoms) for n in (80, 51))
    torch.testing.assert_close(beyond, at_most)
    torch.testing.assert_close(compute_relocation(opacities, scales, 0 * ones, binoms)[0], opacities)


def source_of_copies(new_means, old_means, candidates):
    """For each row of new_means, the candidate row of old_means with the identical centre."""
    matches = (new_means[:, None, :] == old_means[None, candidates, :]).all(-1)  # [R, len(candidates)]
    assert torch.all(matches.sum(1) == 1), "a copy is not an exact copy of exactly one candidate"
    return candidates[matches.int().argmax(1)]


def assert_copies_share_sources(params, optimizers, before, copy_rows, sources, picked, copies, binoms):
    """Rows ``copy_rows`` are copies of ``sources``; each picked source and its k copies share one opacity
    and scale that together composite to the source's old opacity (the 3DGS-MCMC correction).
    Returns the new opacities."""
    names_copied = ["means", "quats", "sh0", "shN", "features"]
    assert_rows_equal(params, optimizers, before, copy_rows, sources, names=names_copied, entries=("param",))
    assert_rows_equal(params, optimizers, before, picked, picked, names=names_copied, entries=("param",))
    old_opacity = torch.sigmoid(before["opacities"]["param"].double())
    new_opacity = torch.sigmoid(params["opacities"].detach().double())
    torch.testing.assert_close(new_opacity[copy_rows], new_opacity[sources])
    composite = 1 - (1 - new_opacity[picked]) ** (copies[picked] + 1)
    torch.testing.assert_close(composite, old_opacity[picked], rtol=1e-5, atol=0)
    _, expected_scales = compute_relocation(
        old_opacity[picked].float(), torch.exp(before["scales"]["param"][picked]), copies[picked] + 1, binoms
    )
    torch.testing.assert_close(
        torch.exp(params["scales"][picked].detach()), expected_scales, rtol=1e-5, atol=0
    )
    return new_opacity


@pytest.mark.parametrize("variant", list(ADAM_VARIANTS))
@pytest.mark.parametrize("sh_degree", [0, 1])
def test_relocate(variant, sh_degree):
    params = make_params(sh_degree=sh_degree)
    dead = torch.arange(N) % 5 == 0
    with torch.no_grad():
        params["opacities"][dead] = torch.logit(torch.tensor(0.001))
    optimizers = make_optimizers(params, variant)
    state = {"grad2d": torch.rand(N) + 1.0, "binoms": binomial_table()}
    before, grad2d_before = snapshot(params, optimizers), state["grad2d"].clone()
    dead_rows, alive_rows = dead.nonzero()[:, 0], (~dead).nonzero()[:, 0]
    binoms = binomial_table()

    torch.manual_seed(0)
    relocate(params, optimizers, state, dead, binoms, min_opacity=0.005)

    sources = source_of_copies(params["means"].detach()[dead_rows], before["means"]["param"], alive_rows)
    copies = torch.bincount(sources, minlength=N)
    picked = copies > 0
    untouched = ~dead & ~picked
    assert_rows_equal(params, optimizers, before, untouched, untouched)
    assert_zero_moments(params, optimizers, dead | picked)
    new_opacity = assert_copies_share_sources(
        params, optimizers, before, dead_rows, sources, picked, copies, binoms
    )
    assert torch.equal(params["scales"][dead_rows], params["scales"][sources])
    assert torch.all(new_opacity >= 0.005 - 1e-6)
    # per-Gaussian state is reset where rows changed; other state entries are left alone
    assert torch.all(state["grad2d"][dead | picked] == 0)
    assert torch.equal(state["grad2d"][untouched], grad2d_before[untouched])
    assert torch.equal(state["binoms"], binoms)
    assert_consistent(params, optimizers, N, before)


def test_relocate_draws_sources_in_proportion_to_opacity():
    n_dead = 3000
    opacity = torch.cat([torch.tensor([0.6, 0.3, 0.1]), torch.full((n_dead,), 0.001)])
    params = {
        "means": nn.Parameter(torch.cat([torch.eye(3), torch.zeros(n_dead, 3)])),
        "scales": nn.Parameter(torch.full((n_dead + 3, 3), -3.0)),
        "quats": nn.Parameter(torch.tensor([1.0, 0, 0, 0]).repeat(n_dead + 3, 1)),
        "opacities": nn.Parameter(torch.logit(opacity)),
    }
    optimizers = {name: torch.optim.Adam([p]) for name, p in params.items()}
    torch.manual_seed(1)
    relocate(params, optimizers, {}, opacity <= 0.005, binomial_table())
    picks = params["means"].detach()[3:].argmax(-1).bincount(minlength=3).double()
    expected = n_dead * torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    assert torch.all((picks - expected).abs() < 5 * torch.sqrt(expected))


def test_relocated_opacity_is_floored_at_min_opacity():
    n_dead = 10  # the single live Gaussian (opacity 0.012) shared 11 ways would get 0.0011 each
    opacity = torch.cat([torch.tensor([0.012]), torch.full((n_dead,), 0.001)])
    params = {
        "means": nn.Parameter(torch.randn(n_dead + 1, 3)),
        "scales": nn.Parameter(torch.full((n_dead + 1, 3), -3.0)),
        "quats": nn.Parameter(torch.tensor([1.0, 0, 0, 0]).repeat(n_dead + 1, 1)),
        "opacities": nn.Parameter(torch.logit(opacity)),
    }
    optimizers = {name: torch.optim.Adam([p]) for name, p in params.items()}
    relocate(params, optimizers, {}, opacity <= 0.005, binomial_table(), min_opacity=0.005)
    torch.testing.assert_close(torch.sigmoid(params["opacities"].detach()), torch.full((n_dead + 1,), 0.005))


def test_relocate_needs_a_live_gaussian():
    params = make_params()
    optimizers = make_optimizers(params)
    with pytest.raises(ValueError, match="no live"):
        relocate(params, optimizers, {}, torch.ones(N, dtype=torch.bool), binomial_table())


@pytest.mark.parametrize("variant", list(ADAM_VARIANTS))
@pytest.mark.parametrize("sh_degree", [0, 1])
def test_sample_add(variant, sh_degree):
    params = make_params(sh_degree=sh_degree)
    optimizers = make_optimizers(params, variant)
    state = {"count": torch.rand(N) + 1.0, "binoms": binomial_table()}
    before, count_before = snapshot(params, optimizers), state["count"].clone()
    n_add = 30  # > N / 2, so that some sources are drawn more than once
    binoms = binomial_table()

    torch.manual_seed(0)
    sample_add(params, optimizers, state, n_add, binoms, min_opacity=0.005)

    new_rows = torch.arange(N, N + n_add)
    sources = source_of_copies(params["means"].detach()[new_rows], before["means"]["param"], torch.arange(N))
    copies = torch.bincount(sources, minlength=N)
    picked, not_picked = (copies > 0).nonzero()[:, 0], (copies == 0).nonzero()[:, 0]
    assert int(copies.max()) > 1
    assert_rows_equal(params, optimizers, before, not_picked, not_picked)
    assert_zero_moments(params, optimizers, torch.cat([picked, new_rows]))
    assert_copies_share_sources(params, optimizers, before, new_rows, sources, picked, copies, binoms)
    assert torch.equal(state["count"], torch.cat([count_before, torch.zeros(n_add)]))
    assert torch.equal(state["binoms"], binoms)
    assert_consistent(params, optimizers, N + n_add, before)


def test_sample_add_nothing():
    params = make_params()
    optimizers = make_optimizers(params)
    before = snapshot(params, optimizers)
    sample_add(params, optimizers, {}, 0, binomial_table())
    assert_rows_equal(params, optimizers, before, torch.arange(N), torch.arange(N))
    with pytest.raises(ValueError, match="n"):
        sample_add(params, optimizers, {}, -1, binomial_table())


def test_inject_noise_to_position_is_covariance_shaped_and_opacity_gated():
    params = make_params(dtype=torch.float64, opacity_range=(0.0005, 0.06))
    optimizers = make_optimizers(params)
    means = params["means"]
    before = snapshot(params, optimizers)
    scaler = 7.0

    torch.manual_seed(5)
    inject_noise_to_position(params, optimizers, {}, scaler)

    torch.manual_seed(5)
    z = torch.randn(3, N, dtype=torch.float64).T
    opacity = torch.sigmoid(before["opacities"]["param"])
    gate = 1.0 / (1.0 + torch.exp(-100.0 * ((1.0 - opacity) - 0.995)))
    scales = torch.exp(before["scales"]["param"])
    expected = covariance_times(before["quats"]["param"], scales, z * (scaler * gate)[:, None])
    assert params["means"] is means  # in place: the optimizer state stays attached
    torch.testing.assert_close(means.detach() - before["means"]["param"], expected, rtol=1e-9, atol=1e-12)
    assert_rows_equal(params, optimizers, before, torch.arange(N), torch.arange(N), entries=MOMENTS)


# --------------------------------------------------------------------------------------------------
# DefaultStrategy
# --------------------------------------------------------------------------------------------------


def test_default_strategy_defaults_are_gsplat_15():
    s = DefaultStrategy()
    assert (s.prune_opa, s.grow_grad2d, s.grow_scale3d, s.grow_scale2d, s.prune_scale3d, s.prune_scale2d) == (
        0.005,
        0.0002,
        0.01,
        0.05,
        0.1,
        0.15,
    )
    schedule = (
        s.refine_scale2d_stop_iter,
        s.refine_start_iter,
        s.refine_stop_iter,
        s.reset_every,
        s.refine_every,
    )
    assert schedule == (0, 500, 15_000, 3000, 100)
    assert (s.pause_refine_after_reset, s.absgrad, s.revised_opacity, s.verbose, s.key_for_gradient) == (
        0,
        False,
        False,
        False,
        "means2d",
    )
    assert s.initialize_state(3.0) == {"grad2d": None, "count": None, "scene_scale": 3.0}


@pytest.mark.parametrize("absgrad", [False, True])
def test_default_accumulates_normalised_gradients_of_visible_gaussians(absgrad):
    width, height, n = 40, 30, 4
    params = make_params(n=n)
    optimizers = make_optimizers(params)
    grads = torch.tensor(
        [
            [[1e-4, -2e-4], [3e-4, 1e-4], [-5e-5, 5e-5], [9e-3, 9e-3]],
            [[-2e-4, 1e-4], [7e-3, 7e-3], [1e-4, 3e-4], [9e-3, 9e-3]],
        ]
    )
    # Gaussian 0 visible in both cameras, 1 and 2 in camera 0 only (2 has one zero radius in camera 1),
    # 3 in none: its large gradients must be ignored.
    radii = torch.tensor([[[3, 4], [2, 2], [5, 1], [0, 0]], [[6, 3], [0, 0], [4, 0], [0, 0]]])
    strategy = DefaultStrategy(absgrad=absgrad)
    state = strategy.initialize_state()
    if absgrad:
        info = fake_info(torch.zeros_like(grads), radii, width, height, absgrads=grads)
    else:
        info = fake_info(grads, radii, width, height)

    for step in (1, 2):
        assert strategy.step_post_backward(params, optimizers, state, step, info) == {}

    ndc = torch.tensor([width / 2 * 2, height / 2 * 2])
    visible = (radii > 0).all(-1)
    expected = ((grads * ndc).norm(dim=-1) * visible).sum(0) * 2
    torch.testing.assert_close(state["grad2d"], expected)
    assert torch.equal(state["count"], torch.tensor([4.0, 2.0, 2.0, 0.0]))


def test_default_gradient_errors():
    params = make_params(n=3)
    optimizers = make_optimizers(params)
    radii = torch.ones(1, 3, 2)
    no_absgrad = fake_info(torch.zeros(1, 3, 2), radii, 10, 10)
    with pytest.raises(ValueError, match="absgrad=True"):
        DefaultStrategy(absgrad=True).step_post_backward(params, optimizers, {"grad2d": None}, 1, no_absgrad)
    with pytest.raises(ValueError, match="packed"):
        DefaultStrategy().step_post_backward(params, optimizers, {"grad2d": None}, 1, no_absgrad, packed=True)
    wrong_n = fake_info(torch.zeros(1, 4, 2), torch.ones(1, 4, 2), 10, 10)
    with pytest.raises(ValueError, match="4 Gaussians"):
        DefaultStrategy().step_post_backward(params, optimizers, {"grad2d": None}, 1, wrong_n)


def refine_scene(scene_scale):
    """Six Gaussians, one per fate (scene_scale 2: clone below 0.02, prune above 0.2, opacity 0.005)."""
    params = make_params(n=6)
    with torch.no_grad():
        params["scales"][:] = torch.log(torch.tensor([0.01, 0.05, 0.01, 0.01, 0.05, 0.5]))[:, None]
        params["opacities"][:] = torch.logit(torch.tensor([0.5, 0.5, 0.5, 0.001, 0.5, 0.5]))
    high, low = 5e-5, 5e-6  # x (width / 2) = 1e-3 and 1e-4 in NDC, against grow_grad2d = 2e-4
    grads = torch.tensor([[[high, 0.0], [0.0, high * 4 / 3], [low, 0.0], [low, 0.0], [low, 0.0], [low, 0.0]]])
    return params, fake_info(grads, torch.full((1, 6, 2), 3), width=40, height=30)


def test_default_refine_clones_splits_prunes_and_resets():
    scene_scale = 2.0
    params, info = refine_scene(scene_scale)
    optimizers = make_optimizers(params)
    strategy = DefaultStrategy(refine_start_iter=5, refine_every=10, reset_every=30)
    state = strategy.initialize_state(scene_scale)

    opacities, split_parent_scale = params["opacities"], torch.exp(params["scales"][1].detach())
    assert strategy.step_post_backward(params, optimizers, state, 0, info) == {}  # no reset at step 0
    assert params["opacities"] is opacities and torch.equal(ids(params), torch.arange(6))

    report = strategy.step_post_backward(params, optimizers, state, 10, info)
    assert report == {"n_clone": 1, "n_split": 1, "n_prune": 1}
    # originals in order (3 pruned for its opacity; 5 too large but size pruning starts after the
    # first reset), then the clone of 0, then the two children of 1
    assert torch.equal(ids(params), torch.tensor([0, 2, 4, 5, 0, 1, 1]))
    torch.testing.assert_close(
        torch.exp(params["scales"][5:]).detach(), (split_parent_scale / 1.6).expand(2, 3)
    )
    assert torch.equal(state["grad2d"], torch.zeros(7)) and torch.equal(state["count"], torch.zeros(7))
    Strategy().check_sanity(params, optimizers)

    # the next rasterization sees 7 Gaussians, all with low gradients
    low_grads = torch.full((1, 7, 2), 1e-6)
    info7 = fake_info(low_grads, torch.full((1, 7, 2), 3), width=40, height=30)
    assert strategy.step_post_backward(params, optimizers, state, 25, info7) == {}
    assert state["count"].sum() == 7
    report = strategy.step_post_backward(params, optimizers, state, 30, info7)
    assert report == {"n_clone": 0, "n_split": 0, "n_prune": 0, "opacity_reset": True}
    torch.testing.assert_close(torch.sigmoid(params["opacities"]).detach(), torch.full((7,), 0.01))
    assert torch.all(optimizers["opacities"].state[params["opacities"]]["exp_avg"] == 0)

    # past the first reset, Gaussians larger than prune_scale3d * scene_scale are pruned too
    report = strategy.step_post_backward(params, optimizers, state, 40, info7)
    assert report == {"n_clone": 0, "n_split": 0, "n_prune": 1}
    assert torch.equal(ids(params), torch.tensor([0, 2, 4, 0, 1, 1]))


def test_default_refine_schedule():
    params, info = refine_scene(2.0)
    optimizers = make_optimizers(params)
    strategy = DefaultStrategy(
        refine_start_iter=10,
        refine_every=10,
        reset_every=30,
        pause_refine_after_reset=5,
        refine_stop_iter=100,
    )
    state = strategy.initialize_state(2.0)
    assert strategy.step_post_backward(params, optimizers, state, 10, info) == {}  # not after start yet
    assert strategy.step_post_backward(params, optimizers, state, 15, info) == {}  # not a refine step
    assert torch.equal(state["count"], torch.full((6,), 2.0))
    assert strategy.step_post_backward(params, optimizers, state, 30, info) == {
        "opacity_reset": True
    }  # paused
    assert len(params["means"]) == 6
    state_before = {k: v.clone() for k, v in state.items() if torch.is_tensor(v)}
    assert strategy.step_post_backward(params, optimizers, state, 100, info) == {}  # stopped: nothing at all
    assert all(torch.equal(state[k], v) for k, v in state_before.items())
    assert strategy.step_post_backward(params, optimizers, state, 40, info)["n_clone"] == 1


def test_default_screen_size_rules():
    width = height = 100
    params = make_params(n=3)
    with torch.no_grad():
        params["scales"][:] = math.log(0.005)  # small in 3D: only the screen-size rules act
        params["opacities"][:] = 0.0
    optimizers = make_optimizers(params)
    strategy = DefaultStrategy(
        refine_scale2d_stop_iter=1000, refine_start_iter=0, refine_every=10, reset_every=20
    )
    state = strategy.initialize_state()
    assert state["radii"] is None
    zero_grads = torch.zeros(2, 3, 2)
    high_grad_0 = torch.zeros(2, 3, 2)
    high_grad_0[0, 0, 0] = 1e-3
    # largest radius over axes, cameras and steps, as a fraction of the image; culled views ignored
    radii_a = torch.tensor([[[10, 4], [1, 3], [0, 50]], [[2, 2], [2, 1], [12, 20]]])
    radii_b = torch.tensor([[[1, 1], [1, 1], [1, 1]], [[1, 1], [2, 2], [1, 1]]])
    strategy.step_post_backward(params, optimizers, state, 1, fake_info(high_grad_0, radii_a, width, height))
    info_b = fake_info(zero_grads, radii_b, width, height)
    strategy.step_post_backward(params, optimizers, state, 2, info_b)
    torch.testing.assert_close(state["radii"], torch.tensor([0.10, 0.03, 0.20]))

    # 0 and 2 are wider than grow_scale2d on screen and split; 0, small in 3D with a high gradient, is
    # also cloned first (the clone is not split); before the first reset nothing is too big
    report = strategy.step_post_backward(params, optimizers, state, 10, info_b)
    assert report == {"n_clone": 1, "n_split": 2, "n_prune": 0}
    assert torch.equal(ids(params), torch.tensor([1, 0, 0, 2, 0, 2]))
    assert torch.equal(state["radii"], torch.zeros(6))

    # after it, Gaussians wider than prune_scale2d are pruned (after being split, as in gsplat)
    radii_c = torch.tensor([[[3, 3], [3, 3], [3, 3], [20, 20], [3, 3], [3, 3]]])
    info_c = fake_info(torch.zeros(1, 6, 2), radii_c, width, height)
    report = strategy.step_post_backward(params, optimizers, state, 30, info_c)
    assert report == {"n_clone": 0, "n_split": 1, "n_prune": 2}
    assert torch.equal(ids(params), torch.tensor([1, 0, 0, 0, 2]))


# --------------------------------------------------------------------------------------------------
# MCMCStrategy
# --------------------------------------------------------------------------------------------------


def test_mcmc_strategy_defaults_are_gsplat_15():
    s = MCMCStrategy()
    options = (s.cap_max, s.noise_lr, s.refine_start_iter, s.refine_stop_iter, s.refine_every, s.min_opacity)
    assert options == (1_000_000, 5e5, 500, 25_000, 100, 0.005) and s.verbose is False
    assert torch.equal(s.initialize_state()["binoms"], binomial_table(51))


def test_mcmc_relocates_dead_and_grows_up_to_cap():
    n = 100
    params = make_params(n=n)
    dead = torch.arange(n) % 10 == 3
    with torch.no_grad():
        params["opacities"][dead] = torch.logit(torch.tensor(0.004))
    optimizers = make_optimizers(params)
    strategy = MCMCStrategy(cap_max=112, refine_start_iter=10, refine_stop_iter=60, refine_every=10)
    state = strategy.initialize_state()
    info = {}
    torch.manual_seed(0)

    for step in (5, 10, 15):  # not after start, not strictly after start, not a refine step
        assert strategy.step_post_backward(params, optimizers, state, step, info, lr=0.0) == {}
    assert len(params["means"]) == n

    report = strategy.step_post_backward(params, optimizers, state, 20, info, lr=0.0)
    assert report == {"n_relocate": 10, "n_add": 5}
    assert len(params["means"]) == 105
    assert torch.all(torch.sigmoid(params["opacities"]) > 0.005)
    assert torch.equal(ids(params)[:n][~dead], torch.arange(n)[~dead])  # live rows stay where they were

    sizes = []
    for step in (30, 40, 50):
        report = strategy.step_post_backward(params, optimizers, state, step, info, lr=0.0)
        sizes.append((report["n_add"], len(params["means"])))
    assert sizes == [(5, 110), (2, 112), (0, 112)]
    assert strategy.step_post_backward(params, optimizers, state, 60, info, lr=0.0) == {}  # stopped
    Strategy().check_sanity(params, optimizers)


def test_mcmc_noise_moves_transparent_gaussians_only():
    n = 200
    params = make_params(n=n)
    transparent = torch.arange(n) < n // 2
    with torch.no_grad():
        params["opacities"][:] = torch.logit(torch.where(transparent, 0.001, 0.9))
        params["scales"][:] = math.log(0.1)
    optimizers = make_optimizers(params)
    strategy = MCMCStrategy()
    state = strategy.initialize_state()
    old_means = params["means"].detach().clone()

    assert strategy.step_post_backward(params, optimizers, state, 1, {}, lr=1e-3) == {}

    moved = (params["means"].detach() - old_means).norm(dim=-1)
    # scaler 1e-3 * 5e5 = 500, gate ~0.62, variance 0.01: displacements of order 3
    assert moved[transparent].mean() > 1.0
    assert moved[~transparent].max() < 1e-6


# --------------------------------------------------------------------------------------------------
# Driven by real renders
# --------------------------------------------------------------------------------------------------


def scene_params(n=300, sh_degree=1):
    scene = make_scene(
        n=n, n_cameras=2, sh_degree=sh_degree, dtype=torch.float32, max_opacity=0.99, width=48, height=36
    )
    n_bases = (sh_degree + 1) ** 2
    dead = torch.arange(n) % 10 == 0  # below both strategies' opacity thresholds
    params = {
        "means": scene["means"],
        "scales": torch.log(scene["scales"]),
        "quats": scene["quats"],
        "opacities": torch.logit(torch.where(dead, 0.003, scene["opacities"])),
        "sh0": scene["colors"][:, :1],
        "shN": scene["colors"][:, 1:n_bases],
    }
    return {k: nn.Parameter(v.contiguous()) for k, v in params.items()}, scene


def render(params, scene, sh_degree, packed=False):
    colors = torch.cat([params["sh0"], params["shN"]], dim=1)
    return gsplat_py.rasterization(
        params["means"],
        params["quats"],
        torch.exp(params["scales"]),
        torch.sigmoid(params["opacities"]),
        colors,
        scene["viewmats"],
        scene["Ks"],
        scene["width"],
        scene["height"],
        sh_degree=sh_degree,
        absgrad=True,
        packed=packed,
    )


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("sh_degree", [0, 1])
@pytest.mark.parametrize("strategy_name", ["default", "mcmc"])
def test_strategies_on_real_renders(strategy_name, sh_degree, packed):
    torch.manual_seed(0)
    params, scene = scene_params(sh_degree=sh_degree)
    optimizers = {name: torch.optim.Adam([p], lr=1e-3, fused=True) for name, p in params.items()}
    target = torch.rand(2, scene["height"], scene["width"], 3)
    if strategy_name == "default":
        strategy = DefaultStrategy(
            refine_start_iter=1, refine_every=2, reset_every=4, absgrad=True, grow_grad2d=1e-5
        )
    else:
        strategy = MCMCStrategy(cap_max=330, refine_start_iter=1, refine_every=2)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=3.0)

    reports = []
    for step in range(7):
        image, _, info = render(params, scene, sh_degree, packed)
        strategy.step_pre_backward(params, optimizers, state, step, info)
        loss = (image - target).abs().mean()
        loss.backward()
        rows = (len(info["gaussian_ids"]),) if packed else (2, len(params["means"]))
        assert info["means2d"].absgrad.shape == info["means2d"].grad.shape == (*rows, 2)
        for optimizer in optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if strategy_name == "default":
            reports.append(strategy.step_post_backward(params, optimizers, state, step, info, packed))
            assert state["grad2d"].shape == state["count"].shape == (len(params["means"]),)
        else:
            reports.append(strategy.step_post_backward(params, optimizers, state, step, info, lr=1e-4))
        strategy.check_sanity(params, optimizers)
        for name, p in params.items():
            assert optimizers[name].state[p]["exp_avg"].shape == p.shape
            assert torch.isfinite(p).all(), name

    refines = [r for r in reports if "n_prune" in r or "n_add" in r]
    assert len(refines) == 3  # steps 2, 4, 6
    if strategy_name == "default":
        assert sum(r["n_clone"] + r["n_split"] for r in refines) > 0
        assert refines[0]["n_prune"] >= 30
        assert reports[4].get("opacity_reset") is True
    else:
        assert refines[0]["n_relocate"] >= 30
        assert [r["n_add"] for r in refines] == [15, 15, 0] and len(params["means"]) == 330
