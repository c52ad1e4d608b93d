"""The CUDA backend against the CPU backend: the same compiled ops (gsplat_py.ops) on CUDA and on CPU tensors.

Skipped as a whole without a GPU or without the extension's CUDA kernels. What is checked:
  * op by op on random scenes (float32, several seeds, 2 cameras, odd image sizes, tile sizes 8, 16 and 24,
    1 to 7 channels, with and without backgrounds, absgrad, pinhole and ortho, compensations, SH degrees 0..3
    with and without masks): forward values, and the VJPs of every differentiable input for the same random
    cotangents on both devices. The binning must be identical (it reproduces the CPU order by design), so
    both devices bin the same projected inputs, and both rasterize the same binned lists;
  * torch.autograd.gradcheck of the whole rasterization() on CUDA (float64, tiny scenes);
  * rasterization() end to end in float64, CUDA against CPU, outputs and gradients;
  * mixed devices, empty and fully culled scenes, backend="auto" on CUDA tensors;
  * training the bundled scene on both devices to the same test PSNR (the slowest test: 12 s with an H100
    and 16 cores, mostly the CPU half; leave it out with -k "not training").

Tolerances (relative: ||cuda - cpu|| / ||cpu|| over a whole tensor):
  * float32 forward: 1e-4. Roundoff alone is ~1e-7 (measured against float64). The CUDA kernels use __expf,
    the CPU ones a polynomial exp, so a (pixel, Gaussian) pair whose alpha lies within ~1e-6 of the 1/255
    threshold can blend on one device only; one such pair moves an image by ~1e-5 (measured).
  * float32 gradients of projection and SH (smooth functions): 1e-4; roundoff is ~1e-6 (measured).
  * float32 gradients of the rasterizer: 1e-3. Roundoff is ~1e-5 (measured), but one of the threshold pairs
    above moves a gradient by up to 3e-4 (measured), and a scene may have a few.
  * float64: 1e-9 (both devices use the exact exp; only the order of the sums differs).
  (Largest differences seen on an H100: 1.7e-6 in float32 projection gradients, 5e-7 in float32 rasterizer
  gradients, 1e-14 in float64.)
These still reject a wrong index: moving the largest per-Gaussian gradient to another Gaussian's slot changes
a gradient by at least sqrt(2 / number of Gaussians) ~ 2e-2. Every per-Gaussian comparison checks that this
mutation would fail it by a factor of 10, and test_tolerances_reject_a_misplaced_gradient shows it on purpose.
"""

import math
import warnings

import pytest
import torch
from conftest import (
    DIFFERENTIABLE_KEYS,
    make_scene,
    random_like,
    relative_error,
    requires_grad_copy,
    tile_grid,
)
from conftest import rasterization_unpacked as rasterization  # these tests read the [C, N] meta

from gsplat_py.rendering._backend import cuda_backend_available

if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU is visible: the CUDA backend tests need one", allow_module_level=True)
if not cuda_backend_available():
    pytest.skip(
        "gsplat_py._C has no CUDA kernels (rebuild with `pip install --no-build-isolation -e .` where torch "
        "has "
        "CUDA and nvcc is found)",
        allow_module_level=True,
    )

# After the skips: these need the extension (and test_cpp_ops skips itself at import time without it).
from test_cpp_ops import (  # noqa: E402
    PIPELINE_CASES,
    PROJECTION_SETTINGS,
    _assert_pipeline_is_smooth,
    _case_id,
    _pipeline_scene,
    _tiny_pipeline_scene,
    project_scene,
    raster_inputs,
)

from gsplat_py.rendering import ops  # noqa: E402

F32 = torch.float32
F64 = torch.float64
CPU = torch.device("cpu")
CUDA = torch.device("cuda")
DEVICES = (CPU, CUDA)  # every comparison runs the CPU first: its results are the reference

F32_FORWARD_RTOL = 1e-4
F32_SMOOTH_GRAD_RTOL = 1e-4
F32_RASTER_GRAD_RTOL = 1e-3
F64_RTOL = 1e-9
RADII_MISMATCH_FRACTION = (
    1e-3  # float32 radii that ceil() to the other integer (or Gaussians culled on one side)
)
LAST_IDS_MATCH_FRACTION = 0.999
MUTATION_MARGIN = 10.0  # a misplaced gradient must miss the tolerance by this factor

W, H = 97, 61  # odd sizes: partial tiles on the right and at the bottom for every tile size
N_GAUSSIANS = 3000
N_RASTER_GAUSSIANS = 1500  # in a 97x61 image: mean alpha 0.95-0.98, so some pixels saturate and some do not
N_CAMERAS = 2


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------


def to_device(scene, device):
    """The dict with its tensors on `device` (None and other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in scene.items()}


def fresh_leaves(tensors, device):
    """Copies of the tensors on `device`, as new leaves that require grad."""
    return [t.detach().to(device).clone().requires_grad_(True) for t in tensors]


def random_loss(outputs, seed):
    """sum_i <outputs_i, r_i> with random r_i drawn on the CPU from `seed`: the same cotangents on every
    device."""
    outputs = [o for o in outputs if o is not None and o.requires_grad]
    return sum((o * random_like(o, seed + i).to(o.device)).sum() for i, o in enumerate(outputs))


def vjp(outputs, inputs, seed):
    """Gradients of random_loss(outputs, seed) w.r.t. inputs (None where an input is unused)."""
    return torch.autograd.grad(random_loss(outputs, seed), inputs, allow_unused=True)


def assert_relative_close(actual, expected, rtol, name):
    """`actual` (CUDA) within rtol of `expected` (CPU) in relative norm."""
    assert actual is not None and expected is not None, f"{name}: missing on one device"
    assert actual.device.type == CUDA.type and expected.device.type == CPU.type, f"{name}: wrong devices"
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
    actual = actual.detach().cpu()
    assert torch.isfinite(actual).all(), f"{name}: non-finite values on CUDA"
    err = relative_error(actual, expected.detach())
    assert err < rtol, f"{name}: ||cuda - cpu|| / ||cpu|| = {err:.3g}, over the tolerance {rtol:g}"


def misplaced_gradient(grad, gaussian_dims):
    """`grad` with the rows (one per Gaussian: its first `gaussian_dims` dims index the Gaussians) of the
    Gaussians with the largest and the smallest gradient swapped: what a kernel writing to a wrong index
    gives."""
    rows = grad.detach().reshape(math.prod(grad.shape[:gaussian_dims]), -1)
    norms = rows.norm(dim=1)
    largest, smallest = int(norms.argmax()), int(norms.argmin())
    swapped = rows.clone()
    swapped[[largest, smallest]] = rows[[smallest, largest]]
    return swapped.reshape(grad.shape)


def assert_grad_close(actual, expected, rtol, name, gaussian_dims=0):
    """assert_relative_close and, for per-Gaussian gradients (gaussian_dims > 0), a check that the tolerance
    would catch a gradient written to the wrong Gaussian."""
    assert_relative_close(actual, expected, rtol, name)
    if gaussian_dims:
        err = relative_error(misplaced_gradient(expected, gaussian_dims), expected.detach())
        assert err > MUTATION_MARGIN * rtol, (
            f"{name}: tolerance {rtol:g} would miss a misplaced gradient ({err:.3g})"
        )


# ---------------------------------------------------------------------------------------------------------
# 1. Op by op, float32, on random scenes
# ---------------------------------------------------------------------------------------------------------

PROJECTION_INPUTS = ("means", "quats", "scales", "viewmats", "Ks")
PROJECTION_OUTPUTS = ("means2d", "depths", "conics", "compensations")


@pytest.mark.parametrize("settings", sorted(PROJECTION_SETTINGS))
@pytest.mark.parametrize("calc_compensations", [False, True])
@pytest.mark.parametrize("camera_model", ["pinhole", "ortho"])
@pytest.mark.parametrize("seed", [0, 1])
def test_project_gaussians_matches_cpu(seed, camera_model, calc_compensations, settings):
    scene = make_scene(N_GAUSSIANS, N_CAMERAS, W, H, dtype=F32, seed=seed, camera_model=camera_model)
    runs = []
    for device in DEVICES:
        leaves = requires_grad_copy(to_device(scene, device))
        kwargs = dict(PROJECTION_SETTINGS[settings], calc_compensations=calc_compensations)
        if kwargs.pop("with_opacities"):
            kwargs["opacities"] = leaves["opacities"].detach()
        radii, *values = project_scene(ops, leaves, **kwargs)
        runs.append((radii, values, leaves))
    (cpu_radii, cpu_values, cpu_leaves), (radii, values, leaves) = runs

    assert radii.dtype == torch.int32 and radii.shape == (N_CAMERAS, N_GAUSSIANS, 2)
    radii = radii.cpu()
    visible, cpu_visible = (radii > 0).all(-1), (cpu_radii > 0).all(-1)
    assert 0.05 < cpu_visible.double().mean() < 0.95, (
        "the scene should have both visible and culled Gaussians"
    )
    # float32: ceil() of values computed in another order (FMA on the GPU) can land on the next integer.
    both = visible & cpu_visible
    assert (visible != cpu_visible).double().mean() <= RADII_MISMATCH_FRACTION
    differ = (radii != cpu_radii) & both[..., None]
    assert differ.double().mean() <= RADII_MISMATCH_FRACTION, f"{int(differ.sum())} radii differ"
    assert (radii - cpu_radii)[both].abs().max() <= 1

    for value, cpu_value, name in zip(values, cpu_values, PROJECTION_OUTPUTS):
        if cpu_value is None:
            assert value is None and not calc_compensations, name
            continue
        culled = value.detach().cpu()[~visible]
        assert torch.equal(culled, torch.zeros_like(culled)), f"{name}: culled entries must be zero"
        assert_relative_close(value.detach()[both.to(CUDA)], cpu_value.detach()[both], F32_FORWARD_RTOL, name)

    # Cotangents only on the Gaussians visible on both devices: one culled on one side has no gradient there.
    def masked(outputs):
        return [
            o * (both if o.dim() == 2 else both[..., None]).to(o.device) for o in outputs if o is not None
        ]

    cpu_grads = vjp(masked(cpu_values), [cpu_leaves[k] for k in PROJECTION_INPUTS], seed=10 + seed)
    grads = vjp(masked(values), [leaves[k] for k in PROJECTION_INPUTS], seed=10 + seed)
    for grad, cpu_grad, name in zip(grads, cpu_grads, PROJECTION_INPUTS):
        per_gaussian = name in ("means", "quats", "scales")
        assert_grad_close(grad, cpu_grad, F32_SMOOTH_GRAD_RTOL, name, gaussian_dims=1 if per_gaussian else 0)


@pytest.mark.parametrize("with_masks", [False, True])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spherical_harmonics_matches_cpu(degree, with_masks):
    g = torch.Generator().manual_seed(100 + degree)
    n = 500
    dirs = torch.randn(N_CAMERAS, n, 3, generator=g) * 2.0  # not normalised
    coeffs = torch.randn(N_CAMERAS, n, 16, 3, generator=g)  # K=16 >= (degree + 1)^2
    masks = torch.rand(N_CAMERAS, n, generator=g) > 0.3 if with_masks else None
    runs = []
    for device in DEVICES:
        leaves = fresh_leaves((dirs, coeffs), device)
        out = ops.spherical_harmonics(degree, *leaves, masks=masks.to(device) if with_masks else None)
        runs.append((out, vjp([out], leaves, seed=200 + degree)))
    (cpu_out, (cpu_v_dirs, cpu_v_coeffs)), (out, (v_dirs, v_coeffs)) = runs
    assert out.shape == (N_CAMERAS, n, 3)
    assert_relative_close(out, cpu_out, F32_FORWARD_RTOL, "colors")
    assert_grad_close(v_dirs, cpu_v_dirs, F32_SMOOTH_GRAD_RTOL, "dirs")
    assert_grad_close(v_coeffs, cpu_v_coeffs, F32_SMOOTH_GRAD_RTOL, "coeffs")
    # Bases beyond the degree get exactly zero gradient, and so does everything of a masked-out entry.
    unused = v_coeffs.cpu()[..., (degree + 1) ** 2 :, :]
    assert torch.equal(unused, torch.zeros_like(unused))
    if with_masks:
        for tensor in (out, v_dirs, v_coeffs):
            masked_out = tensor.detach().cpu()[~masks]
            assert torch.equal(masked_out, torch.zeros_like(masked_out))


@pytest.mark.parametrize("with_rows", [False, True])
def test_spherical_harmonics_split_coefficients_equal_the_whole_on_cuda(with_rows):
    """sh0 and shN read and written in place by the CUDA kernels: the bits of their concatenation."""
    g = torch.Generator().manual_seed(300)
    dirs = torch.randn(500, 3, generator=g).cuda()
    coeffs = torch.randn(700 if with_rows else 500, 16, 3, generator=g).cuda()
    masks = (torch.rand(500, generator=g) > 0.3).cuda()
    rows = torch.randperm(700, generator=g)[:500].cuda() if with_rows else None
    v_colors = torch.randn(500, 3, generator=g).cuda()
    runs = []
    for split in (False, True):
        leaves = [x.clone().requires_grad_(True) for x in (dirs, coeffs[:, :1], coeffs[:, 1:])]
        if split:
            out = ops.spherical_harmonics(2, leaves[0], leaves[1], masks, rows, coeffs_rest=leaves[2])
        else:
            out = ops.spherical_harmonics(2, leaves[0], torch.cat(leaves[1:], 1), masks, rows)
        out.backward(v_colors)
        runs.append([out.detach()] + [x.grad for x in leaves])
    for whole, split, name in zip(*runs, ("colors", "dirs", "sh0", "shN")):
        assert split.shape == whole.shape and torch.equal(split, whole), name


@pytest.mark.parametrize(
    "dtype, tile_size, camera_model, n, width, height",
    [
        (F32, 16, "pinhole", N_GAUSSIANS, W, H),
        (F32, 8, "ortho", N_GAUSSIANS, W, H),
        (F32, 24, "pinhole", N_GAUSSIANS, W, H),
        (F64, 16, "ortho", N_GAUSSIANS, W, H),
        (F64, 24, "pinhole", N_GAUSSIANS, W, H),
        (F32, 16, "pinhole", 40_000, 331, 217),  # ~10^5 intersections: many blocks in every sort pass
    ],
)
def test_binning_matches_cpu_exactly(dtype, tile_size, camera_model, n, width, height):
    scene = make_scene(
        n, N_CAMERAS, width, height, dtype=dtype, seed=2, camera_model=camera_model, tile_size=tile_size
    )
    # Projected on the CPU and copied: both devices bin the very same inputs, so the results must be
    # identical.
    radii, means2d, depths, _, _ = project_scene(ops, scene, opacities=scene["opacities"])
    depths = depths.clone()
    depths[:, 10:30] = depths[:, 10:11]  # exact ties in depth: broken by the index on both devices
    tw, th = tile_grid(width, height, tile_size)
    expected = ops.bin_gaussians_to_tiles(means2d, radii, depths, tile_size, tw, th)
    got = ops.bin_gaussians_to_tiles(means2d.to(CUDA), radii.to(CUDA), depths.to(CUDA), tile_size, tw, th)
    for a, e, name in zip(got, expected, ("tiles_per_gauss", "isect_offsets", "flatten_ids")):
        assert a.device.type == CUDA.type and a.dtype == torch.int32, name
        assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)}, expected {tuple(e.shape)}"
        assert torch.equal(a.cpu(), e), f"{name} differs in {int((a.cpu() != e).sum())} entries"
    assert expected[2].numel() > n * N_CAMERAS // 2
    assert (expected[0] > 1).any() and (expected[0] == tw * th).any()  # multi-tile and whole-grid Gaussians


RASTER_CASES = [
    # channels, tile_size, backgrounds, absgrad, seed. 1-4 channels have kernels of their own, 7 runs the
    # generic one; tile_size 24 has 576 pixels per tile, processed in rounds of 256.
    (1, 8, True, True, 0),
    (1, 24, False, False, 1),
    (2, 16, True, False, 2),
    (3, 16, True, False, 3),
    (3, 8, False, True, 4),
    (3, 24, True, True, 5),
    (4, 16, False, True, 6),
    (4, 24, True, False, 7),
    (7, 16, True, True, 8),
    (7, 8, False, False, 9),
    (7, 24, False, True, 10),
    (7, 24, True, False, 11),
]


def _raster_case_id(case):
    channels, tile_size, backgrounds, absgrad, seed = case
    background = "bg" if backgrounds else "nobg"
    gradient = "absgrad" if absgrad else "grad"
    return f"D{channels}-t{tile_size}-{background}-{gradient}-s{seed}"


def binned_raster_inputs(seed, channels, tile_size, with_backgrounds):
    """Float32 rasterizer inputs of a random scene ({name: tensor}, CPU) and their binning (offsets, ids)."""
    scene = make_scene(N_RASTER_GAUSSIANS, N_CAMERAS, W, H, dtype=F64, seed=seed, tile_size=tile_size)
    radii, means2d, depths, conics, colors, opacities, backgrounds = raster_inputs(
        scene, channels, seed + 300, with_backgrounds
    )
    inputs = {
        "means2d": means2d,
        "conics": conics,
        "colors": colors,
        "opacities": opacities,
        "backgrounds": backgrounds,
    }
    inputs = {k: v.float() for k, v in inputs.items() if v is not None}
    tw, th = tile_grid(W, H, tile_size)
    _, offsets, ids, _ = ops.bin_gaussians_to_tiles(
        inputs["means2d"], radii, depths.float(), tile_size, tw, th
    )
    return inputs, offsets, ids


@pytest.mark.parametrize("case", RASTER_CASES, ids=_raster_case_id)
def test_rasterize_to_pixels_matches_cpu(case):
    channels, tile_size, with_backgrounds, absgrad, seed = case
    # Binned once, on the CPU: both devices blend the same lists.
    inputs, offsets, ids = binned_raster_inputs(seed, channels, tile_size, with_backgrounds)
    raw_runs, grad_runs = [], []
    for device in DEVICES:
        x = to_device(inputs, device)
        # The raw op also returns the transmittance and the index of the last Gaussian blended per pixel.
        raw = torch.ops.gsplat_py.rasterize_forward(
            x["means2d"],
            x["conics"],
            x["colors"],
            x["opacities"],
            x.get("backgrounds"),
            W,
            H,
            tile_size,
            offsets.to(device),
            ids.to(device),
        )
        leaves = dict(zip(x, fresh_leaves(x.values(), device)))
        img, alpha = ops.rasterize_to_pixels(
            leaves["means2d"],
            leaves["conics"],
            leaves["colors"],
            leaves["opacities"],
            W,
            H,
            tile_size,
            offsets.to(device),
            ids.to(device),
            backgrounds=leaves.get("backgrounds"),
            absgrad=absgrad,
        )
        assert torch.equal(img.detach(), raw[0]), "the autograd wrapper renders something else than the op"
        grads = dict(zip(leaves, vjp([img, alpha], list(leaves.values()), seed=seed + 400)))
        if absgrad:
            grads["means2d.absgrad"] = leaves["means2d"].absgrad
        raw_runs.append(raw)
        grad_runs.append(grads)
    (cpu_img, cpu_alpha, cpu_transmittance, cpu_last_ids), (img, alpha, transmittance, last_ids) = raw_runs
    cpu_grads, grads = grad_runs

    assert img.shape == (N_CAMERAS, H, W, channels) and alpha.shape == (N_CAMERAS, H, W, 1)
    assert 0.2 < cpu_alpha.mean() < 0.99, "the scene should be neither empty nor opaque everywhere"
    assert_relative_close(img, cpu_img, F32_FORWARD_RTOL, "render_colors")
    assert_relative_close(alpha, cpu_alpha, F32_FORWARD_RTOL, "render_alphas")
    assert_relative_close(transmittance, cpu_transmittance, F32_FORWARD_RTOL, "transmittance")
    same_last = (last_ids.cpu() == cpu_last_ids).double().mean().item()
    assert same_last >= LAST_IDS_MATCH_FRACTION, f"last_ids agree on only {same_last:.5f} of the pixels"

    assert set(grads) == set(cpu_grads)
    for name, cpu_grad in cpu_grads.items():
        assert_grad_close(
            grads[name], cpu_grad, F32_RASTER_GRAD_RTOL, name, gaussian_dims=0 if name == "backgrounds" else 2
        )


def test_tolerances_reject_a_misplaced_gradient():
    """Mutation check of the comparisons above: the CUDA gradients pass; the same gradients with one
    Gaussian's gradient moved to another Gaussian, or with every Gaussian's gradient moved to the next
    index, fail."""
    inputs, offsets, ids = binned_raster_inputs(seed=21, channels=3, tile_size=16, with_backgrounds=False)
    names = ("means2d", "conics", "colors", "opacities")
    runs = []
    for device in DEVICES:
        leaves = fresh_leaves([inputs[k] for k in names], device)
        img, alpha = ops.rasterize_to_pixels(*leaves, W, H, 16, offsets.to(device), ids.to(device))
        runs.append(vjp([img, alpha], leaves, seed=23))
    for cpu_grad, grad, name in zip(*runs, names):
        assert_relative_close(grad, cpu_grad, F32_RASTER_GRAD_RTOL, name)
        mutations = {
            "swapped": misplaced_gradient(grad, gaussian_dims=2),
            "shifted": torch.roll(grad, shifts=1, dims=1),  # Gaussian n's gradient at n + 1
        }
        for mutation, mutated in mutations.items():
            with pytest.raises(AssertionError, match="over the tolerance"):
                assert_relative_close(mutated, cpu_grad, F32_RASTER_GRAD_RTOL, f"{name} ({mutation})")


# ---------------------------------------------------------------------------------------------------------
# 2. gradcheck of rasterization() on CUDA (float64, the tiny scenes of the CPU gradcheck)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "camera_model, rasterize_mode, sh_degree, channels, render_mode",
    [
        ("pinhole", "classic", 2, 3, "RGB+D"),
        ("pinhole", "antialiased", 3, 3, "RGB"),
        ("ortho", "antialiased", None, 2, "RGB+ED"),
    ],
)
def test_gradcheck_rasterization_on_cuda(camera_model, rasterize_mode, sh_degree, channels, render_mode):
    tile_size = 8
    scene = _tiny_pipeline_scene(camera_model, sh_degree, channels)
    # No discrete decision (culling, thresholds, depth order...) may flip under gradcheck's perturbations.
    _assert_pipeline_is_smooth(scene, camera_model, rasterize_mode == "antialiased", sh_degree, tile_size)
    keys = ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks", "backgrounds")
    inputs = fresh_leaves([scene[k] for k in keys], CUDA)

    def fn(*tensors):
        img, alpha, meta = rasterization(
            **dict(zip(keys, tensors)),
            width=scene["width"],
            height=scene["height"],
            sh_degree=sh_degree,
            render_mode=render_mode,
            rasterize_mode=rasterize_mode,
            camera_model=camera_model,
            tile_size=tile_size,
            backend="cpp",
        )
        assert meta["backend"] == "cpp" and img.device.type == CUDA.type
        return img, alpha

    # The CUDA backward adds float64 gradients atomically, in an order that can change from one call to the
    # next: allow differences in the last bits (gradcheck's own tolerances are 1e-5 absolute, 1e-3 relative).
    assert torch.autograd.gradcheck(fn, inputs, nondet_tol=1e-10)


# ---------------------------------------------------------------------------------------------------------
# 3. rasterization() end to end, float64, CUDA against CPU
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", PIPELINE_CASES, ids=_case_id)
def test_rasterization_float64_matches_cpu(case):
    scene, settings = _pipeline_scene(case, F64, seed=31)
    runs = []
    for device in DEVICES:
        leaves = requires_grad_copy(to_device(scene, device))
        img, alpha, meta = rasterization(**leaves, **settings, absgrad=True, backend="cpp")
        # backward() rather than autograd.grad: it also fills meta["means2d"].grad (retain_grad).
        random_loss([img, alpha], seed=32).backward()
        grads = {k: leaves[k].grad for k in DIFFERENTIABLE_KEYS if leaves.get(k) is not None}
        grads["means2d.grad"] = meta["means2d"].grad
        grads["means2d.absgrad"] = meta["means2d"].absgrad
        runs.append((img.detach(), alpha.detach(), meta, grads))
    (cpu_img, cpu_alpha, cpu_meta, cpu_grads), (img, alpha, meta, grads) = runs
    assert (
        meta["backend"] == "cpp" and img.device.type == CUDA.type and meta["radii"].device.type == CUDA.type
    )
    for key in ("radii", "tiles_per_gauss", "isect_offsets", "flatten_ids"):
        assert torch.equal(meta[key].cpu(), cpu_meta[key]), key
    assert 0.2 < cpu_alpha.mean() < 0.97
    assert_relative_close(img, cpu_img, F64_RTOL, "render_colors")
    assert_relative_close(alpha, cpu_alpha, F64_RTOL, "render_alphas")
    for key, cpu_grad in cpu_grads.items():
        if cpu_grad is None:  # colors in the depth-only modes
            assert grads[key] is None or not grads[key].any(), key
            continue
        assert_relative_close(grads[key], cpu_grad, F64_RTOL, key)


# ---------------------------------------------------------------------------------------------------------
# 4. The API on CUDA tensors: devices, empty scenes, backend selection
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("on_cpu", ["means", "viewmats", "Ks", "colors", "backgrounds"])
@pytest.mark.parametrize("backend", ["cpp", "auto"])
def test_mixed_devices_raise_value_error(backend, on_cpu):
    scene = to_device(make_scene(50, N_CAMERAS, 45, 37, dtype=F32, seed=3, backgrounds=True), CUDA)
    scene[on_cpu] = scene[on_cpu].cpu()
    with pytest.raises(ValueError, match="device"):
        rasterization(**scene, backend=backend)


@pytest.mark.parametrize("reason", ["zero_gaussians", "behind", "off_screen"])
def test_nothing_visible_on_cuda_gives_background_and_zero_gradients(reason):
    C, width, height = N_CAMERAS, 45, 37
    n = 0 if reason == "zero_gaussians" else 12
    scene = make_scene(40, C, width, height, dtype=F32, seed=10, sh_degree=2, backgrounds=True)
    for key in ("means", "quats", "scales", "opacities", "colors"):
        scene[key] = scene[key][:n].clone()
    scene["means"][:, 2] = 4.0 + torch.arange(n, dtype=F32) * 0.1
    scene["means"][:, :2] = 0.0
    scene["scales"] = torch.full((n, 3), 0.1)
    scene["opacities"] = torch.full((n,), 0.8)
    if reason == "behind":
        scene["means"][:, 2] = -scene["means"][:, 2]
    elif reason == "off_screen":
        scene["means"][:, 0] = 20.0
    leaves = requires_grad_copy(to_device(scene, CUDA))
    img, alpha, meta = rasterization(
        **leaves, render_mode="RGB+D", rasterize_mode="antialiased", absgrad=True, backend="cpp"
    )
    assert meta["backend"] == "cpp" and img.device.type == alpha.device.type == CUDA.type
    assert meta["n_isects"] == 0 and not meta["radii"].any()
    bg = leaves["backgrounds"].detach()
    expected = torch.cat([bg, torch.zeros(C, 1, device=CUDA)], -1)[:, None, None, :].expand(
        C, height, width, 4
    )
    assert torch.equal(img.detach(), expected)
    assert torch.equal(alpha.detach(), torch.zeros(C, height, width, 1, device=CUDA))
    cotangent = random_like(img, 60).to(CUDA)
    ((img * cotangent).sum() + alpha.sum()).backward()
    for key in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks"):
        grad = leaves[key].grad
        assert grad is not None and grad.device.type == CUDA.type and not grad.any(), key
    torch.testing.assert_close(leaves["backgrounds"].grad, cotangent[..., :3].sum(dim=(1, 2)))
    assert torch.equal(meta["means2d"].absgrad, torch.zeros(C, n, 2, device=CUDA))


def test_auto_backend_runs_the_cuda_kernels_on_cuda_tensors():
    scene = make_scene(N_GAUSSIANS, N_CAMERAS, W, H, dtype=F32, seed=4, sh_degree=3, backgrounds=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img, alpha, meta = rasterization(**to_device(scene, CUDA), backend="auto")
    fallbacks = [str(w.message) for w in caught if "reference" in str(w.message)]
    assert not fallbacks, fallbacks
    assert meta["backend"] == "cpp"
    for tensor in (
        img,
        alpha,
        *(meta[k] for k in ("radii", "means2d", "conics", "isect_offsets", "flatten_ids")),
    ):
        assert tensor.device.type == CUDA.type
    cpu_img, cpu_alpha, cpu_meta = rasterization(**scene, backend="auto")
    assert cpu_meta["backend"] == "cpp"
    assert_relative_close(img, cpu_img, F32_FORWARD_RTOL, "render_colors")
    assert_relative_close(alpha, cpu_alpha, F32_FORWARD_RTOL, "render_alphas")


# ---------------------------------------------------------------------------------------------------------
# 5. Training: the bundled scene to the same test PSNR on both devices (the slowest test)
# ---------------------------------------------------------------------------------------------------------

TRAIN_STEPS = 300
PSNR_TOLERANCE_DB = 0.2


def _train_bundled_scene(device, output):
    """(test record before, test record after) TRAIN_STEPS steps of the default recipe on `device`."""
    from gsplat_py.training.config import Config
    from gsplat_py.training.trainer import Trainer

    config = Config()
    config.train.output = str(output)
    config.train.steps = TRAIN_STEPS
    config.train.eval_every = 0
    config.train.save_renders = False
    config.train.device = device.type
    config.model.sh_degree_interval = 100  # SH degrees 0..3 all train within the run
    # No densification within the run: which Gaussians split is decided by thresholds, and the split draws its
    # random numbers on the training device, so the two runs would part by chance, not because of the backend.
    # (On the CPU alone, 300 steps with densification from step 100 end 0.3-0.5 dB apart after a 1e-6 change
    # of the initial parameters or another random stream; without densification 0.003 dB apart.)
    config.strategy.default.refine_start_iter = TRAIN_STEPS
    trainer = Trainer(config, progress=False)
    assert trainer.device.type == device.type and trainer.params["means"].device.type == device.type
    start = trainer.evaluate()
    end = trainer.train()[-1]
    assert start["split"] == end["split"] == "test" and end["step"] == TRAIN_STEPS
    return start, end


def test_training_on_cuda_reaches_the_cpu_test_psnr(tmp_path):
    (cpu_start, cpu_end), (cuda_start, cuda_end) = (
        _train_bundled_scene(device, tmp_path / f"run-{index}-{device.type}")
        for index, device in enumerate(DEVICES)
    )
    # The same initial Gaussians (initialised on the CPU, then moved) render the same on both devices.
    assert abs(cuda_start["psnr"] - cpu_start["psnr"]) < 0.01, (cpu_start["psnr"], cuda_start["psnr"])
    assert cpu_end["psnr"] > cpu_start["psnr"] + 6.0, (cpu_start["psnr"], cpu_end["psnr"])
    assert cuda_end["num_gaussians"] == cpu_end["num_gaussians"]
    assert abs(cuda_end["psnr"] - cpu_end["psnr"]) < PSNR_TOLERANCE_DB, (cpu_end["psnr"], cuda_end["psnr"])


def test_render_cameras_on_cuda_match_the_cpu():
    """`gsplat-py render --device cuda`'s renderer: batched cameras, depth, a background; the same frames
    as on the CPU."""
    from render_helpers import look_at, random_splats

    from gsplat_py.tools.camera_paths import Camera
    from gsplat_py.tools.novel_views import render_cameras

    splats = random_splats(400, degree=3, seed=5)
    K = torch.tensor([[60.0, 0.0, 40.0], [0.0, 60.0, 30.0], [0.0, 0.0, 1.0]], dtype=F64)
    cameras = []
    for index, angle in enumerate(torch.linspace(0.0, 2.0, 5).tolist()):
        pose = torch.from_numpy(
            look_at(
                torch.tensor([4.0 * math.cos(angle), 4.0 * math.sin(angle), 1.0]).numpy(),
                torch.zeros(3).numpy(),
            )
        )
        cameras.append(Camera(f"c{index}", torch.linalg.inv(pose), K, 80, 60))
    options = dict(batch_size=2, background=(0.1, 0.2, 0.3), depth=True)
    on_cpu = list(render_cameras(splats, cameras, device=torch.device("cpu"), **options))
    on_gpu = list(render_cameras(splats, cameras, device=torch.device("cuda"), **options))
    assert len(on_gpu) == len(cameras) and on_gpu[0].rgb.is_cuda
    assert sum(float(f.alpha.mean()) for f in on_cpu) > 0.5  # the model is in view
    for cpu, gpu in zip(on_cpu, on_gpu):
        for a, b in ((cpu.rgb, gpu.rgb), (cpu.alpha, gpu.alpha), (cpu.depth, gpu.depth)):
            assert float((b.cpu() - a).norm() / a.norm()) < 1e-4


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("camera_model", ["pinhole", "fisheye"])
def test_dropin_features_match_cpu(packed, camera_model):
    """Packed mode, batch dimensions, fisheye with radial coefficients, SH degree 4 and sparse-free covars:
    the CUDA kernels against the CPU ones in float64, renders and gradients."""
    scenes = [make_scene(n=150, n_cameras=2, seed=seed, sh_degree=3) for seed in (1, 2)]
    g = torch.Generator().manual_seed(7)
    for scene in scenes:
        extra = 0.2 * torch.randn(150, 9, 3, generator=g, dtype=torch.float64)
        scene["colors"] = torch.cat([scene["colors"], extra], dim=1)
    batched = {k: torch.stack([s[k] for s in scenes]) for k in DIFFERENTIABLE_KEYS if k in scenes[0]}
    settings = dict(width=scenes[0]["width"], height=scenes[0]["height"], sh_degree=4, packed=packed)
    if camera_model == "fisheye":
        settings["camera_model"] = "fisheye"
        batched["radial_coeffs"] = torch.tensor([0.05, -0.01, 0.003, -0.001], dtype=torch.float64).expand(
            2, 2, 4
        )
    results = []
    for device in ("cpu", "cuda"):
        inputs = requires_grad_copy({k: v.to(device) for k, v in batched.items()})
        colors, alphas, meta = rasterization(**inputs, **settings, backend="cpp")
        weights = random_like(colors, seed=3)
        ((colors * weights).sum() + alphas.sum()).backward()
        grads = {k: inputs[k].grad.cpu() for k in ("means", "quats", "scales", "colors", "viewmats")}
        results.append((colors.detach().cpu(), alphas.detach().cpu(), meta, grads))
    (c0, a0, m0, g0), (c1, a1, m1, g1) = results
    assert torch.equal(m0["radii"], m1["radii"].cpu())
    if packed:
        assert torch.equal(m0["gaussian_ids"], m1["gaussian_ids"].cpu())
    torch.testing.assert_close(c1, c0, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(a1, a0, rtol=1e-9, atol=1e-10)
    for key in g0:
        assert relative_error(g1[key], g0[key]) < 1e-8, key
