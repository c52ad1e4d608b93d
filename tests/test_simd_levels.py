"""Every SIMD build of the rasterizer kernels (AVX-512 with 16-lane vectors, AVX2+FMA with 8, baseline
x86-64 with 4) against the best one, each in a subprocess started with GSPLAT_PY_SIMD=<level>: the machine
running the tests normally exercises only its best level, and a bug in another would otherwise ship unseen.
(The best level is checked against the reference in test_cpp_ops.py; aarch64 has one build, NEON, with 4
lanes, also run under qemu on x86 by test_kernel_harness.py.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import relative_error

import gsplat_py
from gsplat_py.rendering import _backend

pytestmark = pytest.mark.skipif(not _backend.extension_available(), reason="C++ extension not built")

TESTS = Path(__file__).resolve().parent

# Renders the conftest scene (RGB+D, so 4 channels, plus a 5-channel and a 1-channel render, and tile sizes
# that no pixel block's sides divide, smaller than a block, and the largest) and saves the outputs and
# gradients of every input; backend "reference" renders the same with the plain-PyTorch reference.
CHILD = r"""
import sys, torch
sys.path.insert(0, sys.argv[1])
import gsplat_py
from gsplat_py.rendering import ops
from conftest import make_scene, requires_grad_copy, random_like
backend = sys.argv[3]
results = {"level": ops.simd_level()}
for dtype in (torch.float32, torch.float64):
    for render_mode, channels, tile_size in (("RGB+D", 3, 16), ("RGB", 5, 16), ("RGB", 3, 7), ("RGB", 1, 64),
                                             ("RGB", 3, 3)):
        scene = requires_grad_copy(make_scene(n=300, n_cameras=2, width=45, height=37, dtype=dtype,
                                              seed=3, channels=channels, tile_size=tile_size))
        colors, alphas, _ = gsplat_py.rasterization(**scene, render_mode=render_mode, tile_size=tile_size,
                                                    backend=backend)
        loss = (colors * random_like(colors, 1)).sum() + (alphas * random_like(alphas, 2)).sum()
        loss.backward()
        key = f"{dtype}-{render_mode}-{channels}-{tile_size}"
        results[key] = [colors.detach(), alphas.detach()] + [
            v.grad for v in scene.values() if isinstance(v, torch.Tensor) and v.grad is not None]
torch.save(results, sys.argv[2])
"""


def run_level(level: str, tmp_path: Path, backend: str = "cpp") -> dict:
    out = tmp_path / f"{level}-{backend}.pt"
    env = dict(os.environ, GSPLAT_PY_SIMD=level)
    subprocess.run([sys.executable, "-c", CHILD, str(TESTS), str(out), backend], check=True, env=env)
    return torch.load(out)


def available_levels():
    import torch.ops  # noqa: F401  (the extension registers torch.ops.gsplat_py)

    from gsplat_py.rendering import ops

    best = ops.simd_level()
    if best == "neon":
        return [best]
    order = ["baseline", "x86-64-v3", "x86-64-v4"]
    return order[: order.index(best) + 1]


def assert_every_level_gives_the_same_bits(child: str, tmp_path: Path) -> None:
    """Runs `child` (Python code that saves {"level": simd_level(), key: [tensors]} to sys.argv[1]) once per
    available level, forced with GSPLAT_PY_SIMD, and checks that every level saved the best one's bits."""
    # The child imports the gsplat_py under test (the repository's, or the installed one when that is what
    # these tests import: CI runs the sdist's tests against the installed package) and the test modules.
    path = [str(TESTS), str(Path(gsplat_py.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    results = {}
    for level in available_levels():
        out = tmp_path / f"{level}-bits.pt"
        env = dict(os.environ, GSPLAT_PY_SIMD=level, PYTHONPATH=os.pathsep.join(filter(None, path)))
        subprocess.run([sys.executable, "-c", child, str(out)], check=True, env=env, cwd=tmp_path)
        results[level] = torch.load(out)
        assert results[level]["level"] == level
    best = results[available_levels()[-1]]
    for level, result in results.items():
        for key, tensors in best.items():
            if key != "level":
                for a, b in zip(result[key], tensors, strict=True):
                    assert torch.equal(a, b), (level, key)


def test_every_simd_level_gives_the_same_render_and_gradients(tmp_path):
    levels = available_levels()
    results = {level: run_level(level, tmp_path) for level in levels}
    for level in levels:
        assert results[level]["level"] == level
    best = results[levels[-1]]
    for level in levels[:-1]:
        for key, tensors in best.items():
            if key == "level":
                continue
            float64 = key.startswith("torch.float64")
            for expected, actual in zip(tensors, results[level][key]):
                # float64: the same arithmetic up to FMA contraction; float32: also a pixel may flip at
                # the 1/255 threshold, so compare in the bulk and bound the worst case.
                if float64:
                    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)
                else:
                    close = torch.isclose(actual, expected, rtol=1e-4, atol=1e-5)
                    assert close.float().mean() > 0.999, (level, key)
                    assert (actual - expected).abs().max() < 1e-1 * (1 + expected.abs().max()), (level, key)
    # float64 against the reference, with test_cpp_ops.py's tolerances (forward 1e-4, gradients 1e-6
    # relative).
    reference = run_level(levels[-1], tmp_path, backend="reference")
    for level in levels:
        for key, tensors in reference.items():
            if not key.startswith("torch.float64"):
                continue
            actual = results[level][key]
            torch.testing.assert_close(actual[0], tensors[0], rtol=1e-4, atol=1e-8)
            torch.testing.assert_close(actual[1], tensors[1], rtol=1e-4, atol=1e-8)
            for a, e in zip(actual[2:], tensors[2:]):
                assert relative_error(a, e) < 1e-6, (level, key, relative_error(a, e))


# Spherical harmonics forward and backward: degrees 0..4, masks, coefficients picked by row and split as
# sh0 / shN, 70 rows (whole blocks of the vectorised forward and a tail).
SH_CHILD = r"""
import sys, torch
from gsplat_py.rendering import ops
results = {"level": ops.simd_level()}
for dtype in (torch.float32, torch.float64):
    for degree in range(5):
        g = torch.Generator().manual_seed(degree)
        dirs = (torch.randn(70, 3, generator=g, dtype=dtype) * 2.0).requires_grad_(True)
        sh0 = torch.randn(90, 1, 3, generator=g, dtype=dtype).requires_grad_(True)
        shN = torch.randn(90, 24, 3, generator=g, dtype=dtype).requires_grad_(True)
        masks = torch.rand(70, generator=g) > 0.3
        rows = torch.randperm(90, generator=g)[:70]
        colors = ops.spherical_harmonics(degree, dirs, sh0, masks, rows, coeffs_rest=shN)
        colors.backward(torch.randn(70, 3, generator=g, dtype=dtype))
        results[f"{dtype}-{degree}"] = [colors.detach(), dirs.grad, sh0.grad, shN.grad]
torch.save(results, sys.argv[1])
"""


def test_spherical_harmonics_give_the_same_bits_on_every_simd_level(tmp_path):
    """The forward is built per SIMD level without fma contraction: every level, forced with GSPLAT_PY_SIMD
    in a subprocess, gives exactly the best level's colours and gradients."""
    assert_every_level_gives_the_same_bits(SH_CHILD, tmp_path)


# The projection, forward and backward (camera gradients included), unpacked and packed: every lens model,
# quaternions and scales or covariances, 70 Gaussians (whole blocks of the vectorised kernels and a tail).
PROJECTION_CHILD = r"""
import sys, torch
from gsplat_py.rendering import ops
from conftest import make_scene
results = {"level": ops.simd_level()}

def project(scene, dtype, camera_model, covariance_input, packed, g):
    if covariance_input:
        a = torch.randn(70, 3, 3, generator=g, dtype=torch.float64) * 0.2
        full = a @ a.transpose(1, 2) + 0.01 * torch.eye(3, dtype=torch.float64)
        rows, cols = torch.triu_indices(3, 3)
        leaves = [scene["means"], None, None, full[:, rows, cols].to(dtype)]
    else:
        leaves = [scene["means"], scene["quats"], scene["scales"], None]
    leaves = [None if x is None else x.clone().requires_grad_(True)
              for x in leaves + [scene["viewmats"], scene["Ks"]]]
    means, quats, scales, covars, viewmats, Ks = leaves
    kwargs = dict(opacities=scene["opacities"], calc_compensations=True, camera_model=camera_model,
                  covars=covars)
    if packed:
        p = ops.project_gaussians_packed(means, quats, scales, viewmats, Ks, 45, 37, **kwargs)
        outputs = [p.camera_ids, p.gaussian_ids, p.radii, p.means2d, p.depths, p.conics, p.compensations]
    else:
        outputs = list(ops.project_gaussians(means, quats, scales, viewmats, Ks, 45, 37, **kwargs))
    values = outputs[-4:]
    torch.autograd.backward(values, [torch.randn(v.shape, generator=g, dtype=dtype) for v in values])
    return [x.detach() for x in outputs] + [x.grad for x in leaves if x is not None]

for dtype in (torch.float32, torch.float64):
    for camera_model in ("pinhole", "ortho", "fisheye"):
        for covariance_input in (False, True):
            for packed in (False, True):
                scene = make_scene(70, 3, 45, 37, dtype=dtype, seed=7, camera_model=camera_model)
                g = torch.Generator().manual_seed(8)
                key = f"{dtype}-{camera_model}-{covariance_input}-{packed}"
                results[key] = project(scene, dtype, camera_model, covariance_input, packed, g)
torch.save(results, sys.argv[1])
"""


def test_projection_gives_the_same_bits_on_every_simd_level(tmp_path):
    """The projection is built per SIMD level without fma contraction: every level, forced with
    GSPLAT_PY_SIMD in a subprocess, gives exactly the best level's outputs and gradients."""
    assert_every_level_gives_the_same_bits(PROJECTION_CHILD, tmp_path)
