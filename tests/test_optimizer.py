"""The fused Adam step (gsplat_py.training.optimizer.adam_step, the compiled adam_step op) against
torch's own fused Adam: the same bits (the op takes torch's vector path's rounding; the last numel mod 16
values of a tensor, which torch rounds in a scalar loop of its own, go through torch's kernel), on every
SIMD level; visible Adam (rows left untouched); the checks; the fallback without the op; a
training run with visible Adam on; and, with a GPU, the CUDA kernel against the CPU op."""

import pytest
import torch
from test_simd_levels import assert_every_level_gives_the_same_bits
from test_training import ring_eyes, synthetic_scene, tiny_config

from gsplat_py.errors import ParameterError
from gsplat_py.rendering import _backend
from gsplat_py.training import optimizer
from gsplat_py.training.optimizer import adam_step, visible_rows
from gsplat_py.training.trainer import Trainer

pytestmark = pytest.mark.skipif(not _backend.extension_available(), reason="C++ extension not built")

# One tensor of each row size a Gaussian has (means, quats, opacities, shN), two row counts: 160 rows
# (every numel a multiple of 16) and 1003 (a remainder for torch's scalar loop).
ROW_SHAPES = [(3,), (4,), (), (15, 3)]
LEARNING_RATES = [1.6e-4, 1e-3, 5e-2, 1.25e-4]


def make_optimizers(rows: int, dtype: torch.dtype, seed: int = 0, **adam_options):
    g = torch.Generator().manual_seed(seed)
    params = [
        torch.randn((rows, *shape), generator=g, dtype=dtype).requires_grad_(True) for shape in ROW_SHAPES
    ]
    options = {"eps": 1e-15, **adam_options}
    return [torch.optim.Adam([p], lr=lr, fused=True, **options) for p, lr in zip(params, LEARNING_RATES)]


def clone_optimizers(optimizers):
    clones = []
    for o in optimizers:
        (p,) = o.param_groups[0]["params"]
        q = p.detach().clone().requires_grad_(True)
        clone = torch.optim.Adam([q], **{k: v for k, v in o.param_groups[0].items() if k != "params"})
        clone.load_state_dict(o.state_dict())
        clones.append(clone)
    return clones


def set_gradients(optimizers, step: int):
    g = torch.Generator().manual_seed(1000 + step)
    for o in optimizers:
        (p,) = o.param_groups[0]["params"]
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype) * 10.0 ** (-(step % 4))


def param_and_moments(o):
    (p,) = o.param_groups[0]["params"]
    state = o.state[p]
    return p.detach(), state["exp_avg"], state["exp_avg_sq"], state["step"]


def assert_matches_torch(ours, theirs):
    for a, b in zip(ours, theirs):
        for x, y in zip(param_and_moments(a), param_and_moments(b)):
            assert torch.equal(x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [160, 1003])
def test_adam_step_matches_torch_fused_adam(dtype, rows):
    ours = make_optimizers(rows, dtype)
    theirs = clone_optimizers(ours)
    for step in range(6):
        for o in ours + theirs:  # a learning rate that changes between steps, as the means' does
            o.param_groups[0]["lr"] *= 0.9
        set_gradients(ours, step)
        set_gradients(theirs, step)
        adam_step(ours)
        for o in theirs:
            o.step()
        assert_matches_torch(ours, theirs)
    assert float(param_and_moments(ours[0])[3]) == 6.0


def test_a_changed_setting_is_seen():
    """Mutation check: the comparison above notices a different beta2 (or a step without bias correction)."""
    ours = make_optimizers(160, torch.float32)
    theirs = clone_optimizers(ours)
    for o in theirs:
        o.param_groups[0]["betas"] = (0.9, 0.99)
    set_gradients(ours, 0)
    set_gradients(theirs, 0)
    adam_step(ours)
    for o in theirs:
        o.step()
    with pytest.raises(AssertionError):
        assert_matches_torch(ours, theirs)


def test_visible_rows_stay_as_they_were_and_the_others_take_the_plain_step():
    rows = 1003
    masked = make_optimizers(rows, torch.float32)
    plain = clone_optimizers(masked)
    for o in masked + plain:  # a first step for every row, so that the moments are not zero
        set_gradients([o], 0)
    adam_step(masked)
    adam_step(plain)
    before = clone_optimizers(masked)
    visible = torch.rand(rows, generator=torch.Generator().manual_seed(5)) < 0.3
    set_gradients(masked, 1)
    set_gradients(plain, 1)
    adam_step(masked, visible=visible)
    adam_step(plain, visible=torch.ones(rows, dtype=torch.bool))  # the op's arithmetic in every row
    for m, p, b in zip(masked, plain, before):
        for x, y, z in zip(param_and_moments(m)[:3], param_and_moments(p)[:3], param_and_moments(b)[:3]):
            assert torch.equal(x[visible], y[visible])
            assert torch.equal(x[~visible], z[~visible])
            assert not torch.equal(y[~visible], z[~visible])
        assert float(param_and_moments(m)[3]) == 2.0


def test_visible_rows_of_radii():
    radii = torch.tensor([[[0, 0], [3, 0], [2, 2], [0, 0]], [[0, 0], [0, 0], [0, 0], [1, 4]]])
    assert visible_rows(radii).tolist() == [False, False, True, True]


CHILD = r"""
import sys, torch
from test_optimizer import make_optimizers, set_gradients, param_and_moments
from gsplat_py.rendering import ops
from gsplat_py.training.optimizer import adam_step
results = {"level": ops.simd_level()}
for dtype in (torch.float32, torch.float64):
    optimizers = make_optimizers(1003, dtype)
    visible = torch.arange(1003) % 3 != 0
    for step in range(3):
        set_gradients(optimizers, step)
        adam_step(optimizers, visible=visible if step == 2 else None)
    results[str(dtype)] = [t for o in optimizers for t in param_and_moments(o)[:3]]
torch.save(results, sys.argv[1])
"""


def test_every_simd_level_gives_the_same_bits(tmp_path):
    assert_every_level_gives_the_same_bits(CHILD, tmp_path)


def test_only_plain_adam_is_accepted():
    (p,) = make_optimizers(4, torch.float32)[0].param_groups[0]["params"]
    p.grad = torch.ones_like(p)
    with pytest.raises(ParameterError, match="expected torch.optim.Adam, got SGD"):
        adam_step([torch.optim.SGD([p], lr=0.1)])
    with pytest.raises(ParameterError, match="weight_decay"):
        adam_step([torch.optim.Adam([p], lr=0.1, weight_decay=0.1)])
    with pytest.raises(ParameterError, match="amsgrad, maximize"):
        adam_step([torch.optim.Adam([p], lr=0.1, amsgrad=True, maximize=True)])


def test_parameters_without_gradient_are_skipped():
    optimizers = make_optimizers(20, torch.float32)
    set_gradients(optimizers, 0)
    (skipped,) = optimizers[1].param_groups[0]["params"]
    skipped.grad = None
    before = skipped.detach().clone()
    adam_step(optimizers)
    assert torch.equal(skipped.detach(), before) and not optimizers[1].state[skipped]
    assert float(param_and_moments(optimizers[0])[3]) == 1.0


def test_without_the_op_each_optimizer_steps_itself(monkeypatch):
    ours = make_optimizers(1003, torch.float32)
    theirs = clone_optimizers(ours)
    set_gradients(ours, 0)
    set_gradients(theirs, 0)
    monkeypatch.setattr(optimizer, "_compiled_op_runs_on", lambda device: False)
    adam_step(ours)
    for o in theirs:
        o.step()
    assert_matches_torch(ours, theirs)
    with pytest.raises(ParameterError, match="visible Adam needs"):
        adam_step(ours, visible=torch.ones(1003, dtype=torch.bool))


def test_training_with_visible_adam_keeps_unseen_gaussians(tmp_path):
    """optim.visible_adam: Gaussians moved out of every view keep their values; plain Adam moves them on
    their momentum (shN has no gradient yet, at SH degree 0)."""
    scene = synthetic_scene(ring_eyes(6), test_every=3)
    for visible_adam in (False, True):
        config = tiny_config(tmp_path / str(visible_adam), train__steps=20, train__eval_every=0)
        config.optim.visible_adam = visible_adam
        trainer = Trainer(config, scene=scene, progress=False)
        for _ in range(5):
            trainer.train_step()
        with torch.no_grad():
            trainer.params["means"][:10] += 1000.0
        before = {name: p.detach().clone() for name, p in trainer.params.items()}
        for _ in range(5):
            trainer.train_step()
        for name, p in trainer.params.items():
            if name == "shN":  # zero gradient: the SH degree is still 0
                continue
            assert torch.equal(p[:10], before[name][:10]) == visible_adam, (name, visible_adam)
            assert not torch.equal(p[10:], before[name][10:]), name


@pytest.mark.skipif(
    not (torch.cuda.is_available() and _backend.cuda_backend_available()),
    reason="needs a GPU and the CUDA kernels",
)
def test_cuda_adam_step_gives_the_cpu_op_bits():
    """The CUDA kernel and the CPU op share adam_math.h (coefficients in double on the host, explicit fma):
    the same bits, with and without a visible mask. On the CPU the op does every row here (an all-true
    mask), since without a mask the CPU leaves each tensor's last values to torch's kernel."""
    rows = 1003
    on_cpu = make_optimizers(rows, torch.float32)
    on_cuda = []
    for o in on_cpu:
        (p,) = o.param_groups[0]["params"]
        q = p.detach().cuda().requires_grad_(True)
        on_cuda.append(torch.optim.Adam([q], **{k: v for k, v in o.param_groups[0].items() if k != "params"}))
    visible = torch.arange(rows) % 3 != 0
    for step in range(3):
        set_gradients(on_cpu, step)
        for a, b in zip(on_cpu, on_cuda):
            b.param_groups[0]["params"][0].grad = a.param_groups[0]["params"][0].grad.cuda()
        mask = visible if step == 2 else torch.ones(rows, dtype=torch.bool)
        adam_step(on_cpu, visible=mask)
        adam_step(on_cuda, visible=mask.cuda() if step == 2 else None)
    for a, b in zip(on_cpu, on_cuda):
        for x, y in zip(param_and_moments(a)[:3], param_and_moments(b)[:3]):
            assert torch.equal(x, y.cpu())
