"""Tests of the compiled C++ ops (gsplat_py.ops) and of rasterization(backend="cpp").

The plain-PyTorch reference (gsplat_py.reference, tested on its own in test_reference.py) is the oracle:
  * op by op and through the whole pipeline on random scenes with the awkward cases (Gaussians behind the
    camera, huge, sub-pixel, on tile borders; odd image sizes; several cameras), forward values and the
    VJPs of every differentiable input;
  * torch.autograd.gradcheck of the hand-written backward passes (float64, tiny scenes);
  * absgrad, determinism (run to run and across thread counts), analytic renders, non-contiguous inputs.

Tolerances: float64 is the strict check (the double kernels use the exact exp): forward 1e-4 relative
(in practice ~1e-12), gradients 1e-6 relative (norm of the difference / norm of the reference). The float32
rasterizer uses a polynomial exp, so a pixel can flip at the alpha >= 1/255 threshold: float32 images must
agree within 1e-5 on >= 99.9 % of the pixels, and everywhere within 1e-2.
"""

import math

import pytest
import torch
from conftest import (
    DIFFERENTIABLE_KEYS,
    make_cameras,
    make_scene,
    random_like,
    relative_error,
    requires_grad_copy,
    rotation_x,
    rotation_y,
    tile_grid,
)
from conftest import rasterization_unpacked as rasterization  # these tests read the [C, N] meta

from gsplat_py.rendering import _backend
from gsplat_py.rendering import reference as ref

if not _backend.extension_available():
    pytest.skip(
        "the compiled extension gsplat_py._C is not available (build it with "
        "`pip install --no-build-isolation -e .`); these tests check the C++ ops against the reference",
        allow_module_level=True,
    )

from gsplat_py.rendering import ops  # noqa: E402  (after the skip: the wrappers need the extension at call time)

F64 = torch.float64
F32 = torch.float32
ALPHA_THRESHOLD = 1.0 / 255.0

FWD_RTOL_F64 = 1e-4
FWD_ATOL_F64 = 1e-8
GRAD_RTOL_F64 = 1e-6
F32_PIXEL_ATOL = 1e-5
F32_PIXEL_FRACTION = 0.999
F32_MAX_DIFF = 1e-2


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------


def assert_forward_close(actual, expected, name=""):
    """float64: rtol 1e-4. float32: >= 99.9 % of the entries within 1e-5, all within 1e-2."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    if actual.dtype == F64:
        torch.testing.assert_close(actual, expected, rtol=FWD_RTOL_F64, atol=FWD_ATOL_F64, msg=name or None)
    else:
        diff = (actual.double() - expected.double()).abs()
        frac = (diff <= F32_PIXEL_ATOL).double().mean().item()
        assert frac >= F32_PIXEL_FRACTION, f"{name}: only {frac:.5f} of the entries agree within 1e-5"
        assert diff.max().item() < F32_MAX_DIFF, f"{name}: max difference {diff.max().item():.3g}"


def assert_grads_close(actual, expected, names, rtol=GRAD_RTOL_F64):
    for a, e, name in zip(actual, expected, names):
        if e is None:
            assert a is None or torch.equal(a, torch.zeros_like(a)), name
            continue
        assert a is not None, f"{name}: no gradient from the C++ backend"
        assert a.shape == e.shape, name
        assert torch.isfinite(a).all(), f"{name}: non-finite gradient"
        err = relative_error(a, e)
        assert err < rtol, f"{name}: relative gradient error {err:.3g} (|ref| = {e.norm().item():.3g})"


def vjp(outputs, inputs, seed):
    """Gradients of sum_i <outputs_i, random_i> w.r.t. inputs (None where an input is unused)."""
    outputs = [o for o in outputs if o is not None and o.requires_grad]
    loss = sum((o * random_like(o, seed + i)).sum() for i, o in enumerate(outputs))
    return torch.autograd.grad(loss, inputs, allow_unused=True)


def project_scene(impl, scene, **kwargs):
    return impl.project_gaussians(
        scene["means"],
        scene["quats"],
        scene["scales"],
        scene["viewmats"],
        scene["Ks"],
        scene["width"],
        scene["height"],
        camera_model=scene["camera_model"],
        **kwargs,
    )


def strided(t):
    """Same values as t, non-contiguous (every other element of a twice-as-wide buffer); differentiable."""
    out = torch.stack([t, torch.zeros_like(t)], dim=-1).flatten(-2)[..., ::2]
    assert not out.is_contiguous() and torch.equal(out, t)
    return out


def transposed_back(t):
    """Same values as t, in column-major order of its first two dimensions (non-contiguous);
    differentiable."""
    out = t.transpose(0, 1).contiguous().transpose(0, 1)
    assert not out.is_contiguous() and torch.equal(out, t)
    return out


def raster_inputs(scene, channels, seed, backgrounds):
    """Projected (reference, float64) rasterizer inputs of a scene with per-camera colours and opacities."""
    scene64 = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in scene.items()}
    radii, means2d, depths, conics, _ = project_scene(ref, scene64, opacities=scene64["opacities"])
    C, N = depths.shape
    g = torch.Generator().manual_seed(seed)
    colors = torch.rand(C, N, channels, generator=g, dtype=F64)
    opacities = scene["opacities"].double()[None] * (0.7 + 0.3 * torch.rand(C, N, generator=g, dtype=F64))
    bg = torch.rand(C, channels, generator=g, dtype=F64) if backgrounds else None
    return radii, means2d, depths, conics, colors, opacities, bg


# ---------------------------------------------------------------------------------------------------------
# 1. C++ vs reference, op by op
# ---------------------------------------------------------------------------------------------------------

PROJECTION_SETTINGS = {
    "default": dict(with_opacities=True),
    "culling_knobs": dict(with_opacities=False, eps2d=0.1, near_plane=3.0, far_plane=5.0, radius_clip=2.5),
}


@pytest.mark.parametrize("settings", sorted(PROJECTION_SETTINGS))
@pytest.mark.parametrize("calc_compensations", [False, True])
@pytest.mark.parametrize("camera_model", ["pinhole", "ortho"])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_project_gaussians_matches_reference(dtype, camera_model, calc_compensations, settings):
    scene = make_scene(300, 3, 61, 29, dtype=dtype, seed=1, camera_model=camera_model)
    kwargs = dict(PROJECTION_SETTINGS[settings])
    if kwargs.pop("with_opacities"):
        kwargs["opacities"] = scene["opacities"]
    kwargs["calc_compensations"] = calc_compensations
    leaves = requires_grad_copy(scene)
    names = ("means", "quats", "scales", "viewmats", "Ks")
    inputs = [leaves[k] for k in names]
    outs = {}
    for impl in (ops, ref):
        outs[impl] = project_scene(impl, leaves, **kwargs)
    (radii, *values), (ref_radii, *ref_values) = outs[ops], outs[ref]

    assert radii.dtype == torch.int32 and radii.shape == (3, 300, 2)
    visible = (ref_radii > 0).all(-1)
    assert 100 < int(visible.sum()) < 900, "the scene should have both visible and culled Gaussians"
    if dtype == F64:
        assert torch.equal(radii, ref_radii)
    else:
        # ceil() of float32 values computed in a different order may land on the other integer.
        differ = radii != ref_radii
        assert differ.double().mean() < 5e-3 and (radii - ref_radii).abs().max() <= 1
    culled = ~(radii > 0).all(-1)
    for value, ref_value, name in zip(values, ref_values, ("means2d", "depths", "conics", "compensations")):
        if ref_value is None:
            assert value is None and not calc_compensations
            continue
        # Culled entries are exactly zero.
        assert torch.equal(value.detach()[culled], torch.zeros_like(value.detach()[culled])), name
        both = visible & ~culled
        if dtype == F64:
            torch.testing.assert_close(
                value.detach()[both], ref_value.detach()[both], rtol=1e-6, atol=1e-12, msg=name
            )
        else:
            torch.testing.assert_close(
                value.detach()[both], ref_value.detach()[both], rtol=1e-4, atol=1e-4, msg=name
            )

    if dtype == F64:
        grads = vjp(values, inputs, seed=10)
        ref_grads = vjp(ref_values, inputs, seed=10)
        assert_grads_close(grads, ref_grads, names)


@pytest.mark.parametrize("with_masks", [False, True])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spherical_harmonics_matches_reference(degree, with_masks):
    g = torch.Generator().manual_seed(degree)
    dirs = (torch.randn(3, 40, 3, generator=g, dtype=F64) * 2.0).requires_grad_(True)  # not normalised
    coeffs = torch.randn(3, 40, 16, 3, generator=g, dtype=F64).requires_grad_(True)  # K=16 >= needed
    masks = torch.rand(3, 40, generator=g) > 0.3 if with_masks else None
    out = ops.spherical_harmonics(degree, dirs, coeffs, masks=masks)
    expected = ref.spherical_harmonics(degree, dirs, coeffs, masks=masks)
    assert out.shape == (3, 40, 3)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    if with_masks:
        assert torch.equal(out.detach()[~masks], torch.zeros(int((~masks).sum()), 3, dtype=F64))
    assert_grads_close(vjp([out], [dirs, coeffs], 3), vjp([expected], [dirs, coeffs], 3), ("dirs", "coeffs"))

    out32 = ops.spherical_harmonics(degree, dirs.detach().float(), coeffs.detach().float(), masks=masks)
    torch.testing.assert_close(out32, expected.detach().float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize(
    "degree, bases, with_masks, with_rows",
    [
        (0, 1, False, False),
        (0, 4, True, False),
        (1, 16, True, True),
        (3, 16, False, True),
        (3, 25, True, False),
    ],
)
def test_spherical_harmonics_split_coefficients_equal_the_whole(dtype, degree, bases, with_masks, with_rows):
    """The first basis and the rest as two tensors (gsplat's sh0 and shN) give the bits of their
    concatenation: values, and gradients laid out as each input (zero rows where no direction reads)."""
    g = torch.Generator().manual_seed(40 + degree)
    dirs = torch.randn(300, 3, generator=g, dtype=dtype) * 2.0
    coeffs = torch.randn(400 if with_rows else 300, bases, 3, generator=g, dtype=dtype)
    masks = torch.rand(300, generator=g) > 0.3 if with_masks else None
    rows = torch.randperm(400, generator=g)[:300] if with_rows else None
    v_colors = torch.randn(300, 3, generator=g, dtype=dtype)
    runs = []
    for split in (False, True):
        leaves = [x.clone().requires_grad_(True) for x in (dirs, coeffs[:, :1], coeffs[:, 1:])]
        if split:
            out = ops.spherical_harmonics(degree, leaves[0], leaves[1], masks, rows, coeffs_rest=leaves[2])
        else:
            out = ops.spherical_harmonics(degree, leaves[0], torch.cat(leaves[1:], 1), masks, rows)
        out.backward(v_colors)
        runs.append([out.detach()] + [x.grad for x in leaves])
    for whole, split, name in zip(*runs, ("colors", "dirs", "sh0", "shN")):
        assert split.shape == whole.shape and torch.equal(split, whole), name
    v_rest = runs[1][3]
    assert torch.equal(
        v_rest[:, (degree + 1) ** 2 - 1 :], torch.zeros_like(v_rest[:, (degree + 1) ** 2 - 1 :])
    )
    if with_rows:  # rows no direction picks
        unread = torch.ones(400, dtype=torch.bool)
        unread[rows] = False
        assert torch.equal(runs[1][2][unread], torch.zeros_like(runs[1][2][unread]))


def random_covars(n, generator, dtype):
    """Upper triangles (xx, xy, xz, yy, yz, zz) of n random symmetric positive-definite 3x3 matrices."""
    a = torch.randn(n, 3, 3, generator=generator, dtype=F64) * 0.2
    full = a @ a.transpose(1, 2) + 0.01 * torch.eye(3, dtype=F64)
    rows, cols = torch.triu_indices(3, 3)
    return full[:, rows, cols].to(dtype)


@pytest.mark.parametrize("covariance_input", [False, True])
@pytest.mark.parametrize("camera_model", ["pinhole", "ortho", "fisheye"])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_projection_blocks_give_each_pair_its_own_bits(dtype, camera_model, covariance_input):
    """The projection's forward and backward work on blocks of pairs at once (cut where a camera's pairs
    end; a short block padded): 70 Gaussians in 2 batches of 2 cameras give each Gaussian exactly the
    outputs and gradients it gets projected alone (a block of one)."""
    scene = make_scene(70, 2, 45, 37, dtype=dtype, seed=5, camera_model=camera_model)
    g = torch.Generator().manual_seed(6)
    means = torch.stack([scene["means"], scene["means"].flip(0)])  # batch 2: the Gaussians reversed
    viewmats = torch.stack([scene["viewmats"], scene["viewmats"].flip(0)])
    Ks = torch.stack([scene["Ks"], scene["Ks"].flip(0)])
    opacities = torch.stack([scene["opacities"], scene["opacities"].flip(0)])
    if covariance_input:
        quats = scales = None
        covars = random_covars(140, g, dtype).reshape(2, 70, 6)
    else:
        quats = torch.stack([scene["quats"], scene["quats"].flip(0)])
        scales = torch.stack([scene["scales"], scene["scales"].flip(0)])
        covars = None
    cotangents = [torch.randn(2, 2, 70, *tail, generator=g, dtype=dtype) for tail in ((2,), (), (3,), ())]

    def project(i):
        """Outputs and Gaussian gradients of Gaussians i (a slice) of both batches."""
        leaves = [
            None if x is None else x[:, i].clone().requires_grad_(True)
            for x in (means, quats, scales, covars)
        ]
        radii, *values = ops.project_gaussians(
            leaves[0],
            leaves[1],
            leaves[2],
            viewmats,
            Ks,
            45,
            37,
            opacities=opacities[:, i],
            calc_compensations=True,
            camera_model=camera_model,
            covars=leaves[3],
        )
        torch.autograd.backward(values, [c[:, :, i] for c in cotangents])
        return [radii] + [v.detach() for v in values] + [x.grad for x in leaves if x is not None]

    together = project(slice(None))
    assert 0 < int((together[0] > 0).all(-1).sum()) < 280, "the scene should have visible and culled pairs"
    for n in range(70):
        alone = project(slice(n, n + 1))
        for k, (a, b) in enumerate(zip(together, alone, strict=True)):
            dim = 2 if k < 5 else 1  # outputs [B, C, N, ...]; gradients [B, N, ...]
            assert torch.equal(a.narrow(dim, n, 1), b), (n, k)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4])
def test_spherical_harmonics_blocks_give_each_row_its_own_bits(dtype, degree):
    """The forward evaluates blocks of rows at once (a short last block padded with copies of its last
    row): every row of a 70-row call (whole blocks and a short one, masked rows among them, coefficients
    picked by row) has exactly the bits of that row evaluated alone."""
    g = torch.Generator().manual_seed(70 + degree)
    dirs = torch.randn(70, 3, generator=g, dtype=dtype) * 2.0
    coeffs = torch.randn(90, 25, 3, generator=g, dtype=dtype)
    masks = torch.rand(70, generator=g) > 0.3
    rows = torch.randperm(90, generator=g)[:70]
    together = ops.spherical_harmonics(degree, dirs, coeffs[:, :1], masks, rows, coeffs_rest=coeffs[:, 1:])
    for i in range(70):
        alone = ops.spherical_harmonics(
            degree,
            dirs[i : i + 1],
            coeffs[rows[i], None, :1],
            masks[i : i + 1],
            coeffs_rest=coeffs[rows[i], None, 1:],
        )
        assert torch.equal(together[i : i + 1], alone), i
    assert torch.equal(together[~masks], torch.zeros_like(together[~masks]))


@pytest.mark.parametrize(
    "dtype, tile_size, width, height, camera_model",
    [
        (F64, 16, 45, 37, "pinhole"),
        (F64, 8, 61, 29, "ortho"),
        (F32, 16, 61, 29, "pinhole"),
        (F32, 8, 45, 37, "pinhole"),
        (F32, 16, 45, 37, "ortho"),
    ],
)
def test_binning_matches_reference_exactly(dtype, tile_size, width, height, camera_model):
    scene = make_scene(
        300, 3, width, height, dtype=dtype, seed=2, camera_model=camera_model, tile_size=tile_size
    )
    radii, means2d, depths, _, _ = project_scene(ops, scene, opacities=scene["opacities"])
    # A few exact ties in depth (between Gaussians sharing tiles): broken by the flat index.
    depths = depths.clone()
    depths[:, 10:20] = depths[:, 10:11]
    tw, th = tile_grid(width, height, tile_size)
    got = ops.bin_gaussians_to_tiles(means2d, radii, depths, tile_size, tw, th)
    expected = ref.bin_gaussians_to_tiles(means2d, radii, depths, tile_size, tw, th)
    names = ("tiles_per_gauss", "isect_offsets", "flatten_ids")
    for a, e, name in zip(got, expected, names):
        assert a.dtype == torch.int32, name
        assert torch.equal(a, e), name
    assert got[2].numel() > 1000
    # Some Gaussians touch several tiles (straddle borders), some the whole grid (huge ones).
    assert (got[0] > 1).any() and (got[0] == tw * th).any()


@pytest.mark.parametrize("dtype, packed", [(F32, False), (F32, True), (F64, False), (F64, True)])
def test_binning_same_bits_on_any_thread_count(dtype, packed):
    """The binning's passes split the (sorted) Gaussians into one range per thread: every tile's list must
    keep its serial order across the ranges, which only ties in depth between Gaussians sharing tiles show
    (else the depth alone orders a tile). Many equal depths, large footprints, three images."""
    g = torch.Generator().manual_seed(21)
    n_images, per_image, width, height, tile_size = 3, 20000, 160, 128, 16
    count = n_images * per_image
    means2d = (
        torch.rand(count, 2, generator=g, dtype=F64) * torch.tensor([width + 40, height + 40]) - 20
    ).to(dtype)
    radii = torch.randint(0, 40, (count, 2), generator=g, dtype=torch.int32)  # 0: not visible
    # Eight depths spread over the signs, exponents and mantissas: every radix pass sorts something.
    levels = torch.tensor([-2.0, 0.011, 0.37, 1.0, 2.5, 3.9, 140.0, 7.3e4], dtype=dtype)
    depths = levels[torch.randint(0, len(levels), (count,), generator=g)]
    tw, th = tile_grid(width, height, tile_size)
    if packed:
        image_ids = torch.sort(torch.randint(0, n_images, (count,), generator=g)).values
        inputs = (means2d, radii, depths, tile_size, tw, th, image_ids, n_images)
    else:
        shape = (n_images, per_image)
        inputs = (
            means2d.reshape(*shape, 2),
            radii.reshape(*shape, 2),
            depths.reshape(shape),
            tile_size,
            tw,
            th,
        )
    _assert_binning_same_on_1_2_3_threads_as_reference(inputs)


def test_binning_same_bits_with_more_tiles_than_intersections():
    """A large image with small Gaussians: the radix sort splits, the tile passes (one counter per tile and
    thread would outnumber the intersections) run as one range."""
    g = torch.Generator().manual_seed(22)
    count, size, tile_size = 30000, 4096, 16
    means2d = torch.rand(1, count, 2, generator=g) * size
    radii = torch.full((1, count, 2), 3, dtype=torch.int32)
    depths = torch.randint(0, 5, (1, count), generator=g).float()  # ties
    tiles = size // tile_size
    runs = _assert_binning_same_on_1_2_3_threads_as_reference(
        (means2d, radii, depths, tile_size, tiles, tiles)
    )
    assert 2 * tiles * tiles > runs[1].flatten_ids.numel()


def _assert_binning_same_on_1_2_3_threads_as_reference(inputs):
    """Bins on 1, 2 and 3 threads, checks that all outputs are equal to each other and to the reference;
    returns the results by thread count."""
    previous = torch.get_num_threads()
    try:
        runs = {}
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs[threads] = ops.bin_gaussians_to_tiles(*inputs)
    finally:
        torch.set_num_threads(previous)
    # Well above kItemGrain (binning.cpp) visible Gaussians per thread: the passes do split.
    assert (runs[1].tiles_per_gauss > 0).sum() > 3 * 8192
    names = ("tiles_per_gauss", "isect_offsets", "flatten_ids", "isect_ids")
    for threads in (2, 3):
        for name, single, parallel in zip(names, runs[1], runs[threads]):
            assert torch.equal(single, parallel), f"{name} differs between 1 and {threads} threads"
    expected = ref.bin_gaussians_to_tiles(*inputs)
    for name, got, exp in zip(names, runs[2], expected):
        assert torch.equal(got, exp), f"{name} differs from the reference"
    return runs


RASTER_CASES = [
    # dtype, channels, backgrounds, tile_size, width, height
    (F64, 3, True, 16, 45, 37),
    (F64, 3, False, 8, 61, 29),
    (F64, 5, True, 8, 45, 37),
    (F64, 5, False, 16, 61, 29),
    (F32, 3, True, 16, 45, 37),
    (F32, 5, False, 8, 61, 29),
]


@pytest.mark.parametrize("dtype, channels, backgrounds, tile_size, width, height", RASTER_CASES)
def test_rasterize_to_pixels_matches_reference(dtype, channels, backgrounds, tile_size, width, height):
    scene = make_scene(300, 3, width, height, dtype=F64, seed=3, tile_size=tile_size)
    radii, means2d, depths, conics, colors, opacities, bg = raster_inputs(scene, channels, 4, backgrounds)
    tw, th = tile_grid(width, height, tile_size)
    cast = [t.to(dtype) if t is not None else None for t in (means2d, conics, colors, opacities, bg)]
    _, offsets, ids, _ = ref.bin_gaussians_to_tiles(cast[0], radii, depths.to(dtype), tile_size, tw, th)
    names = ("means2d", "conics", "colors", "opacities", "backgrounds")
    results = {}
    for impl in (ops, ref):
        leaves = [t.clone().requires_grad_(True) if t is not None else None for t in cast]
        img, alpha = impl.rasterize_to_pixels(
            leaves[0],
            leaves[1],
            leaves[2],
            leaves[3],
            width,
            height,
            tile_size,
            offsets,
            ids,
            backgrounds=leaves[4],
        )
        grads = vjp([img, alpha], [t for t in leaves if t is not None], seed=20) if dtype == F64 else None
        results[impl] = (img.detach(), alpha.detach(), grads)
    img, alpha, grads = results[ops]
    ref_img, ref_alpha, ref_grads = results[ref]
    assert img.shape == (3, height, width, channels) and alpha.shape == (3, height, width, 1)
    assert 0.2 < ref_alpha.mean() < 0.95, "the scene should be neither empty nor opaque everywhere"
    assert_forward_close(img, ref_img, "render_colors")
    assert_forward_close(alpha, ref_alpha, "render_alphas")
    if grads is not None:
        assert_grads_close(grads, ref_grads, [n for n, t in zip(names, cast) if t is not None])


# ---------------------------------------------------------------------------------------------------------
# 1b. C++ vs reference through rasterization()
# ---------------------------------------------------------------------------------------------------------

PIPELINE_CASES = [
    # render_mode, rasterize_mode, camera_model, tile_size, sh_degree, channels, backgrounds, W, H, C,
    # per_camera
    ("RGB", "classic", "pinhole", 16, None, 3, True, 45, 37, 3, False),
    ("RGB", "antialiased", "ortho", 8, 3, 3, False, 61, 29, 2, False),
    ("D", "classic", "pinhole", 8, None, 3, True, 45, 37, 3, False),
    ("ED", "antialiased", "pinhole", 16, 1, 3, False, 61, 29, 2, False),
    ("RGB+D", "classic", "ortho", 16, 2, 3, True, 45, 37, 3, False),
    ("RGB+ED", "antialiased", "pinhole", 8, None, 5, True, 61, 29, 2, False),
    ("RGB", "classic", "pinhole", 16, 0, 3, False, 61, 29, 3, True),
    ("RGB", "antialiased", "pinhole", 16, None, 5, False, 45, 37, 3, True),
    ("RGB+ED", "classic", "ortho", 8, 3, 3, True, 45, 37, 2, False),
    ("ED", "classic", "ortho", 16, None, 3, True, 61, 29, 2, False),
    ("RGB+D", "antialiased", "pinhole", 8, None, 5, False, 45, 37, 3, False),
    ("D", "antialiased", "ortho", 16, None, 3, False, 61, 29, 2, False),
]


def _pipeline_scene(case, dtype, seed):
    (
        render_mode,
        rasterize_mode,
        camera_model,
        tile_size,
        sh_degree,
        channels,
        backgrounds,
        W,
        H,
        C,
        per_camera,
    ) = case
    scene = make_scene(
        300,
        C,
        W,
        H,
        dtype=dtype,
        seed=seed,
        channels=channels,
        sh_degree=sh_degree,
        camera_model=camera_model,
        tile_size=tile_size,
    )
    if per_camera:
        g = torch.Generator().manual_seed(seed + 100)
        scene["colors"] = torch.rand((C,) + scene["colors"].shape, generator=g, dtype=F64).to(dtype)
    if backgrounds:
        bg_channels = 1 if render_mode in ("D", "ED") else channels
        g = torch.Generator().manual_seed(seed + 200)
        scene["backgrounds"] = torch.rand(C, bg_channels, generator=g, dtype=F64).to(dtype)
    settings = dict(render_mode=render_mode, rasterize_mode=rasterize_mode, tile_size=tile_size)
    return scene, settings


def _case_id(case):
    (
        render_mode,
        rasterize_mode,
        camera_model,
        tile_size,
        sh_degree,
        channels,
        backgrounds,
        W,
        H,
        C,
        per_camera,
    ) = case
    colors = f"sh{sh_degree}" if sh_degree is not None else f"D{channels}"
    return "-".join(
        [
            render_mode,
            rasterize_mode,
            camera_model,
            f"t{tile_size}",
            colors,
            "bg" if backgrounds else "nobg",
            f"{W}x{H}",
            f"C{C}",
        ]
        + (["percam"] if per_camera else [])
    )


@pytest.mark.parametrize("case", PIPELINE_CASES, ids=_case_id)
def test_rasterization_matches_reference_float64(case):
    scene, settings = _pipeline_scene(case, F64, seed=5)
    results = {}
    for backend in ("cpp", "reference"):
        leaves = requires_grad_copy(scene)
        img, alpha, meta = rasterization(**leaves, **settings, backend=backend)
        keys = [k for k in DIFFERENTIABLE_KEYS if leaves.get(k) is not None]
        grads = vjp([img, alpha], [leaves[k] for k in keys], seed=30)
        results[backend] = (img.detach(), alpha.detach(), meta, dict(zip(keys, grads)))
    img, alpha, meta, grads = results["cpp"]
    ref_img, ref_alpha, ref_meta, ref_grads = results["reference"]
    assert meta["backend"] == "cpp" and ref_meta["backend"] == "reference"
    assert torch.equal(meta["radii"], ref_meta["radii"])
    for key in ("tiles_per_gauss", "isect_offsets", "flatten_ids"):
        assert torch.equal(meta[key], ref_meta[key]), key
    assert 0.2 < ref_alpha.mean() < 0.97
    assert_forward_close(img, ref_img, "render_colors")
    assert_forward_close(alpha, ref_alpha, "render_alphas")
    assert_grads_close([grads[k] for k in ref_grads], list(ref_grads.values()), list(ref_grads))
    # Every input that influences the image receives a non-zero gradient.
    for key, grad in grads.items():
        if key in ("colors", "backgrounds") and settings["render_mode"] in ("D", "ED"):  # not rendered
            assert grad is None or torch.equal(grad, torch.zeros_like(grad))
        else:
            assert grad is not None and grad.abs().sum() > 0, key


@pytest.mark.parametrize("case", [PIPELINE_CASES[i] for i in (0, 1, 4, 5, 7)], ids=_case_id)
def test_rasterization_matches_reference_float32(case):
    scene, settings = _pipeline_scene(case, F32, seed=6)
    img, alpha, _ = rasterization(**scene, **settings, backend="cpp")
    ref_img, ref_alpha, _ = rasterization(**scene, **settings, backend="reference")
    if settings["render_mode"] in ("RGB+D", "RGB+ED"):
        # Depth is ~2.5..6: compare it relative to its scale (a pixel flipping at the 1/255 threshold changes
        # the accumulated depth by depth/255). Expected depth divides by alpha, so only compare it where the
        # pixel is well covered.
        scale = ref_img[..., -1:].abs().amax().clamp(min=1.0)
        covered = (ref_alpha > 0.5) & (alpha > 0.5)
        assert_forward_close(
            torch.where(covered, img[..., -1:], 0) / scale,
            torch.where(covered, ref_img[..., -1:], 0) / scale,
            "depth channel",
        )
        img, ref_img = img[..., :-1], ref_img[..., :-1]
    assert_forward_close(img, ref_img, "render_colors")
    assert_forward_close(alpha, ref_alpha, "render_alphas")


# ---------------------------------------------------------------------------------------------------------
# 2. gradcheck of the compiled ops (float64, tiny scenes)
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """gradcheck makes thousands of calls on tiny inputs: run them on one thread, where a busy machine cannot
    stall them at a thread barrier. The results do not depend on the thread count (see the determinism
    test)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _tiny_projection_inputs(camera_model):
    g = torch.Generator().manual_seed(11)
    n = 5
    if camera_model == "pinhole":
        means = torch.cat(
            [
                (torch.rand(n, 2, generator=g, dtype=F64) - 0.5) * 1.2,
                3.5 + torch.rand(n, 1, generator=g, dtype=F64),
            ],
            -1,
        )
        means[-1] = torch.tensor([4.8, 0.3, 4.0], dtype=F64)  # x/z = 1.2: beyond the frustum clamp
    else:
        means = torch.cat(
            [
                (torch.rand(n, 2, generator=g, dtype=F64) - 0.5) * 3.0,
                3.5 + torch.rand(n, 1, generator=g, dtype=F64),
            ],
            -1,
        )
    quats = torch.randn(n, 4, generator=g, dtype=F64)
    scales = 0.08 + 0.2 * torch.rand(n, 3, generator=g, dtype=F64)
    if camera_model == "pinhole":
        scales[-1] = torch.tensor([2.0, 1.5, 1.0], dtype=F64)  # large, so that it is still visible
    viewmats = torch.eye(4, dtype=F64)[None].repeat(2, 1, 1)
    viewmats[1, :3, :3] = rotation_y(0.1) @ rotation_x(-0.05)
    viewmats[1, :3, 3] = torch.tensor([0.1, -0.05, 0.2], dtype=F64)
    f = 50.0 if camera_model == "pinhole" else 12.0
    Ks = torch.tensor(
        [[[f, 0, 11.0], [0, 1.1 * f, 7.5], [0, 0, 1]], [[0.9 * f, 0, 9.5], [0, f, 8.5], [0, 0, 1]]], dtype=F64
    )
    return means, quats, scales, viewmats, Ks


@pytest.mark.parametrize("camera_model", ["pinhole", "ortho"])
def test_gradcheck_project_gaussians(camera_model, one_thread):
    inputs = [t.clone().requires_grad_(True) for t in _tiny_projection_inputs(camera_model)]
    W, H = 20, 16

    def fn(means, quats, scales, viewmats, Ks):
        radii, means2d, depths, conics, comp = ops.project_gaussians(
            means, quats, scales, viewmats, Ks, W, H, calc_compensations=True, camera_model=camera_model
        )
        assert (radii > 0).all(), "every Gaussian must stay visible in every camera"
        return means2d, depths, conics, comp

    if camera_model == "pinhole":  # the last Gaussian exercises the clamped-Jacobian branch in camera 0
        x, _, z = inputs[0][-1].tolist()
        assert x / z > (W - 11.0) / 50.0 + 0.15
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_gradcheck_spherical_harmonics(degree, one_thread):
    g = torch.Generator().manual_seed(12 + degree)
    dirs = (torch.randn(2, 3, 3, generator=g, dtype=F64) * 1.5).requires_grad_(True)
    coeffs = torch.randn(2, 3, 16, 3, generator=g, dtype=F64).requires_grad_(True)
    masks = torch.tensor([[True, False, True], [True, True, False]])
    assert torch.autograd.gradcheck(lambda d, c: ops.spherical_harmonics(degree, d, c), (dirs, coeffs))
    assert torch.autograd.gradcheck(
        lambda d, c: ops.spherical_harmonics(degree, d, c, masks=masks), (dirs, coeffs)
    )
    sh0, shN = (x.detach().clone().requires_grad_(True) for x in (coeffs[..., :1, :], coeffs[..., 1:, :]))
    assert torch.autograd.gradcheck(
        lambda d, c0, cN: ops.spherical_harmonics(degree, d, c0, masks=masks, coeffs_rest=cN),
        (dirs, sh0, shN),
    )


def _alpha_field(means2d, conics, opacities, width, height):
    """Unclamped opacity * exp(-sigma) of every Gaussian at every pixel centre: [C, N, H, W]."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=F64) + 0.5, torch.arange(width, dtype=F64) + 0.5, indexing="ij"
    )
    dx = means2d[..., 0, None, None].double() - xs
    dy = means2d[..., 1, None, None].double() - ys
    a, b, c = (conics[..., k, None, None].double() for k in range(3))
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    return opacities[..., None, None].double() * torch.exp(-sigma)


def _assert_away_from_thresholds(alpha, margin=1e-4):
    """No pixel within `margin` (relative) of the 1/255 threshold or of the alpha cap, and T stays >= 2e-4."""
    near_threshold = (alpha - ALPHA_THRESHOLD).abs() < margin * ALPHA_THRESHOLD
    assert not near_threshold.any(), f"{int(near_threshold.sum())} pixel(s) at the 1/255 threshold"
    assert alpha.max() < ref.MAX_ALPHA - 1e-4, "a pixel reaches the alpha cap"
    blended = torch.where(alpha >= ALPHA_THRESHOLD, alpha.clamp(max=ref.MAX_ALPHA), 0.0)
    assert (1 - blended).prod(dim=1).min() > 2e-4, "a pixel reaches the 1e-4 transmittance stop"


def _tiny_raster_inputs(channels, seed=13):
    g = torch.Generator().manual_seed(seed)
    C, n = 2, 6
    means2d = torch.rand(C, n, 2, generator=g, dtype=F64) * torch.tensor([16.0, 12.0], dtype=F64) + 2.0
    # Well-conditioned covariances of 1.5..4 px standard deviation, as conics.
    L = torch.randn(C, n, 2, 2, generator=g, dtype=F64) * 0.6 + torch.eye(2, dtype=F64) * 2.2
    cov = L @ L.transpose(-1, -2)
    inv = torch.linalg.inv(cov)
    conics = torch.stack([inv[..., 0, 0], inv[..., 0, 1], inv[..., 1, 1]], -1)
    colors = torch.rand(C, n, channels, generator=g, dtype=F64)
    opacities = 0.3 + 0.45 * torch.rand(C, n, generator=g, dtype=F64)
    backgrounds = torch.rand(C, channels, generator=g, dtype=F64)
    depths = torch.randperm(C * n, generator=g).reshape(C, n).to(F64) + 1.0
    radii = torch.ceil(3.33 * torch.sqrt(torch.stack([cov[..., 0, 0], cov[..., 1, 1]], -1))).to(torch.int32)
    return means2d, conics, colors, opacities, backgrounds, depths, radii


@pytest.mark.parametrize("with_backgrounds, channels", [(True, 3), (False, 2)])
def test_gradcheck_rasterize_to_pixels(with_backgrounds, channels, one_thread):
    W, H, tile_size = 20, 16, 8
    means2d, conics, colors, opacities, backgrounds, depths, radii = _tiny_raster_inputs(channels)
    _assert_away_from_thresholds(_alpha_field(means2d, conics, opacities, W, H))
    tw, th = tile_grid(W, H, tile_size)
    # The binning is fixed (from the unperturbed inputs); it is not differentiable anyway.
    _, offsets, ids, _ = ops.bin_gaussians_to_tiles(means2d, radii, depths, tile_size, tw, th)
    assert ids.numel() > 2 * means2d.shape[1]  # Gaussians span several tiles
    inputs = [t.clone().requires_grad_(True) for t in (means2d, conics, colors, opacities)]
    if with_backgrounds:
        inputs.append(backgrounds.clone().requires_grad_(True))

    def fn(means2d, conics, colors, opacities, backgrounds=None):
        return ops.rasterize_to_pixels(
            means2d, conics, colors, opacities, W, H, tile_size, offsets, ids, backgrounds=backgrounds
        )

    assert torch.autograd.gradcheck(fn, inputs)


def _tiny_pipeline_scene(camera_model, sh_degree, channels):
    g = torch.Generator().manual_seed(14)
    n, W, H = 4, 20, 16
    viewmats, Ks = make_cameras(2, W, H, F64, camera_model)
    if camera_model == "pinhole":
        Ks[:, :2, :2] *= 0.75
    z = torch.tensor([3.2, 3.9, 4.6, 5.3], dtype=F64)
    xy = (
        (torch.rand(n, 2, generator=g, dtype=F64) - 0.5)
        * torch.tensor([1.0, 0.8], dtype=F64)
        * z[:, None]
        / 4
    )
    if camera_model == "ortho":
        xy = xy * 4.0 / z[:, None]
    scene = dict(
        means=torch.cat([xy, z[:, None]], -1),
        quats=torch.randn(n, 4, generator=g, dtype=F64),
        scales=0.15 + 0.2 * torch.rand(n, 3, generator=g, dtype=F64),
        opacities=0.35 + 0.4 * torch.rand(n, generator=g, dtype=F64),
        colors=(
            torch.randn(n, 16, 3, generator=g, dtype=F64) * 0.3
            if sh_degree is not None
            else torch.rand(n, channels, generator=g, dtype=F64)
        ),
        viewmats=viewmats,
        Ks=Ks,
        backgrounds=torch.rand(2, channels, generator=g, dtype=F64),
        width=W,
        height=H,
    )
    return scene


def _assert_pipeline_is_smooth(scene, camera_model, antialiased, sh_degree, tile_size):
    """The discrete decisions of the pipeline (culling, radii, tile rectangles, 1/255 threshold, alpha cap,
    transmittance stop, depth order, the SH clamp at 0, the frustum clamp) cannot flip under a 1e-6
    perturbation of any input."""
    W, H = scene["width"], scene["height"]
    radii, means2d, depths, conics, comp = project_scene(
        ref,
        {**scene, "camera_model": camera_model},
        opacities=scene["opacities"],
        calc_compensations=antialiased,
    )
    assert (radii > 0).all()
    op = scene["opacities"][None] * comp if antialiased else scene["opacities"][None].expand_as(depths)
    _assert_away_from_thresholds(_alpha_field(means2d, conics, op, W, H))
    # Radii: ceil(extend * sqrt(cov + eps)) away from integers; tile rectangle bounds away from tile borders.
    extend = torch.clamp(torch.sqrt(2 * torch.log(op * 255.0)), max=3.33)
    det = conics[..., 0] * conics[..., 2] - conics[..., 1] ** 2
    cov_diag = torch.stack([conics[..., 2], conics[..., 0]], -1) / det[..., None]  # diag of inverse(conic)
    r = extend[..., None] * torch.sqrt(cov_diag)
    assert ((r - r.round()).abs() > 1e-4).all()
    for sign in (-1, 1):
        edge = (means2d + sign * radii.double()) / tile_size
        assert ((edge - edge.round()).abs() > 1e-5).all()
    sorted_depths = depths.sort(dim=1).values
    assert (sorted_depths.diff(dim=1) > 1e-3).all()
    if camera_model == "pinhole":
        R, t = scene["viewmats"][:, :3, :3], scene["viewmats"][:, :3, 3]
        p = torch.einsum("cij,nj->cni", R, scene["means"]) + t[:, None]
        K = scene["Ks"]
        for axis, size in ((0, W), (1, H)):
            f, c = K[:, axis, axis, None], K[:, axis, 2, None]
            u = p[..., axis] / p[..., 2]
            upper = (size - c) / f + 0.15 * size / f
            lower = -(c / f + 0.15 * size / f)
            assert ((u - upper).abs() > 1e-4).all() and ((u - lower).abs() > 1e-4).all()
    if sh_degree is not None:
        campos = torch.inverse(scene["viewmats"])[:, :3, 3]
        dirs = scene["means"][None] - campos[:, None]
        sh = ref.spherical_harmonics(sh_degree, dirs, scene["colors"][None].expand(2, -1, -1, -1))
        assert ((sh + 0.5).abs() > 1e-4).all()


@pytest.mark.parametrize(
    "camera_model, rasterize_mode, sh_degree, channels, render_mode",
    [
        ("pinhole", "classic", 2, 3, "RGB+D"),
        ("pinhole", "antialiased", 3, 3, "RGB"),
        ("ortho", "antialiased", None, 2, "RGB+ED"),
    ],
)
def test_gradcheck_rasterization_pipeline(
    camera_model, rasterize_mode, sh_degree, channels, render_mode, one_thread
):
    tile_size = 8
    scene = _tiny_pipeline_scene(camera_model, sh_degree, channels)
    _assert_pipeline_is_smooth(scene, camera_model, rasterize_mode == "antialiased", sh_degree, tile_size)
    keys = ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks", "backgrounds")
    inputs = [scene[k].clone().requires_grad_(True) for k in keys]

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
        assert meta["backend"] == "cpp"
        return img, alpha

    assert torch.autograd.gradcheck(fn, inputs)


# ---------------------------------------------------------------------------------------------------------
# 3. absgrad
# ---------------------------------------------------------------------------------------------------------


def test_absgrad_matches_reference_op():
    W, H, tile_size = 45, 37, 8
    scene = make_scene(300, 3, W, H, dtype=F64, seed=7, tile_size=tile_size, max_opacity=0.95)
    radii, means2d, depths, conics, colors, opacities, bg = raster_inputs(scene, 3, 8, True)
    tw, th = tile_grid(W, H, tile_size)
    _, offsets, ids, _ = ref.bin_gaussians_to_tiles(means2d, radii, depths, tile_size, tw, th)
    results = {}
    for impl in (ops, ref):
        m2d = means2d.clone().requires_grad_(True)
        img, alpha = impl.rasterize_to_pixels(
            m2d, conics, colors, opacities, W, H, tile_size, offsets, ids, backgrounds=bg, absgrad=True
        )
        ((img * random_like(img, 40)).sum() + (alpha * random_like(alpha, 41)).sum()).backward()
        results[impl] = (m2d.grad, m2d.absgrad)
    grad, absgrad = results[ops]
    ref_grad, ref_absgrad = results[ref]
    assert absgrad.shape == means2d.shape and absgrad.dtype == F64
    err = relative_error(absgrad, ref_absgrad)
    assert err < 1e-9, f"absgrad relative error {err:.3g}"
    assert relative_error(grad, ref_grad) < 1e-9
    assert (absgrad >= grad.abs()).all()
    assert (absgrad > grad.abs() * (1 + 1e-6)).any()  # pixels of opposite signs exist: not just |grad|
    visible = (radii > 0).all(-1)
    assert torch.equal(absgrad[~visible], torch.zeros_like(absgrad[~visible]))


@pytest.mark.parametrize("rasterize_mode", ["classic", "antialiased"])
def test_absgrad_matches_reference_pipeline(rasterize_mode):
    scene = make_scene(300, 2, 61, 29, dtype=F64, seed=8, sh_degree=2, backgrounds=True, max_opacity=0.95)
    results = {}
    for backend in ("cpp", "reference"):
        leaves = requires_grad_copy(scene)
        img, alpha, meta = rasterization(
            **leaves, rasterize_mode=rasterize_mode, absgrad=True, backend=backend
        )
        ((img * random_like(img, 42)).sum() + (alpha * random_like(alpha, 43)).sum()).backward()
        results[backend] = (meta["means2d"].grad, meta["means2d"].absgrad)
    grad, absgrad = results["cpp"]
    ref_grad, ref_absgrad = results["reference"]
    err = relative_error(absgrad, ref_absgrad)
    assert err < 1e-9, f"absgrad relative error {err:.3g}"
    assert (absgrad >= grad.abs()).all()
    assert (absgrad > grad.abs() * (1 + 1e-6)).any()


# ---------------------------------------------------------------------------------------------------------
# 4. Determinism
# ---------------------------------------------------------------------------------------------------------


def _forward_backward(scene):
    leaves = requires_grad_copy(scene)
    img, alpha, meta = rasterization(**leaves, render_mode="RGB+D", absgrad=True, backend="cpp")
    ((img * random_like(img, 50)).sum() + (alpha * random_like(alpha, 51)).sum()).backward()
    tensors = {
        "render_colors": img.detach(),
        "render_alphas": alpha.detach(),
        "means2d.grad": meta["means2d"].grad,
        "means2d.absgrad": meta["means2d"].absgrad,
    }
    tensors.update({f"{k}.grad": leaves[k].grad for k in DIFFERENTIABLE_KEYS if leaves.get(k) is not None})
    return tensors


def test_deterministic_across_runs_and_thread_counts():
    scene = make_scene(2000, 2, 97, 75, dtype=F32, seed=9, sh_degree=3, backgrounds=True)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first = _forward_backward(scene)
        second = _forward_backward(scene)
        torch.set_num_threads(1)
        single = _forward_backward(scene)
        torch.set_num_threads(3)
        triple = _forward_backward(scene)
    finally:
        torch.set_num_threads(previous)
    assert first["render_alphas"].mean() > 0.3
    for name, value in first.items():
        assert torch.equal(value, second[name]), f"{name} differs between two identical runs"
        assert torch.equal(value, single[name]), f"{name} differs between 2 threads and 1 thread"
        assert torch.equal(value, triple[name]), f"{name} differs between 2 threads and 3 threads"


# ---------------------------------------------------------------------------------------------------------
# 5. Analytic cases through rasterization(backend="cpp")
# ---------------------------------------------------------------------------------------------------------


def _camera_looking_at(z_axis_point, angle_y, angle_x, t, fx, fy, cx, cy):
    """A world->camera matrix with the given rotation and translation, and the world position of the
    camera-space point (0, 0, z) (on the optical axis)."""
    viewmat = torch.eye(4, dtype=F64)
    R = rotation_y(angle_y) @ rotation_x(angle_x)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = torch.tensor(t, dtype=F64)
    world = R.T @ (torch.tensor([0.0, 0.0, z_axis_point], dtype=F64) - viewmat[:3, 3])
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=F64)
    return viewmat, K, world


def test_isotropic_gaussian_peak_and_falloff():
    W, H, f, z, s = 35, 29, 40.0, 4.0, 0.2
    sigma_px = f * s / z  # 2 px
    viewmat, K, mean = _camera_looking_at(z, 0.3, -0.2, (0.4, -0.1, 0.7), f, f, W / 2, H / 2)
    opacity, color, bg = (
        0.8,
        torch.tensor([0.3, 0.6, 0.9], dtype=F64),
        torch.tensor([0.1, 0.2, 0.3], dtype=F64),
    )
    img, alpha, meta = rasterization(
        means=mean[None],
        quats=torch.tensor([[0.3, -0.5, 0.7, 0.2]], dtype=F64),  # isotropic: any rotation
        scales=torch.full((1, 3), s, dtype=F64),
        opacities=torch.tensor([opacity], dtype=F64),
        colors=color[None],
        viewmats=viewmat[None],
        Ks=K[None],
        width=W,
        height=H,
        eps2d=0.0,
        backgrounds=bg[None],
        render_mode="RGB+ED",
        tile_size=8,
        backend="cpp",
    )
    extend = math.sqrt(2 * math.log(opacity * 255))  # opacity-aware extent (< 3.33)
    assert meta["radii"].tolist() == [[[math.ceil(extend * sigma_px)] * 2]]
    torch.testing.assert_close(
        meta["means2d"].detach(), torch.tensor([[[W / 2, H / 2]]], dtype=F64), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(meta["depths"], torch.tensor([[z]], dtype=F64), rtol=1e-14, atol=0)
    # The principal point (17.5, 14.5) is the centre of pixel (row 14, col 17).
    row0, col0 = 14, 17
    checked = 0
    for dr, dc in [
        (0, 0),
        (0, 1),
        (1, 1),
        (-1, 2),
        (2, -1),
        (-3, 2),
        (4, 0),
        (0, -5),
        (3, 3),
        (6, 6),
        (-10, 12),
    ]:
        a = opacity * math.exp(-0.5 * (dr * dr + dc * dc) / sigma_px**2)
        a = a if a >= ALPHA_THRESHOLD else 0.0
        pixel = img[0, row0 + dr, col0 + dc].detach()
        expected = a * color + (1 - a) * bg
        torch.testing.assert_close(
            pixel[:3], expected, rtol=1e-12, atol=1e-14, msg=f"pixel offset {(dr, dc)}"
        )
        torch.testing.assert_close(
            alpha[0, row0 + dr, col0 + dc, 0].detach(), torch.tensor(a, dtype=F64), rtol=1e-12, atol=1e-14
        )
        if a > 0:  # expected depth: the Gaussian's depth wherever it is seen
            torch.testing.assert_close(pixel[3], torch.tensor(z, dtype=F64), rtol=1e-12, atol=0)
            checked += 1
    assert checked >= 6
    torch.testing.assert_close(
        img[0, row0, col0, :3].detach(), opacity * color + (1 - opacity) * bg, rtol=1e-12, atol=0
    )


def test_opaque_front_gaussian_hides_the_one_behind():
    W, H, f = 33, 27, 50.0
    viewmat, K, _ = _camera_looking_at(1.0, -0.25, 0.1, (0.2, 0.3, -0.4), f, f, W / 2, H / 2)
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    on_axis = lambda z: R.T @ (torch.tensor([0.0, 0.0, z], dtype=F64) - t)  # noqa: E731
    z_front, s_front, z_back, s_back = 3.0, 0.12, 6.0, 0.36  # 2 px and 3 px standard deviations
    colors = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=F64)  # front green, back red
    opacities = torch.tensor([1.0, 0.7], dtype=F64)
    bg = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    img, alpha, meta = rasterization(
        # The back Gaussian is listed first: the order must come from depth.
        means=torch.stack([on_axis(z_back), on_axis(z_front)]),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=F64),
        scales=torch.tensor([[s_back] * 3, [s_front] * 3], dtype=F64),
        opacities=opacities.flip(0),
        colors=colors.flip(0),
        viewmats=viewmat[None],
        Ks=K[None],
        width=W,
        height=H,
        eps2d=0.0,
        backgrounds=bg[None],
        backend="cpp",
    )
    assert (meta["radii"] > 0).all()
    sig_f, sig_b = f * s_front / z_front, f * s_back / z_back
    row0, col0 = 13, 16
    for dr, dc in [(0, 0), (0, 1), (1, -1), (2, 2), (-3, 1), (0, 5), (6, 0), (-7, -6)]:
        r2 = dr * dr + dc * dc
        a_f = min(ref.MAX_ALPHA, 1.0 * math.exp(-0.5 * r2 / sig_f**2))
        a_b = min(ref.MAX_ALPHA, 0.7 * math.exp(-0.5 * r2 / sig_b**2))
        a_f = a_f if a_f >= ALPHA_THRESHOLD else 0.0
        a_b = a_b if a_b >= ALPHA_THRESHOLD else 0.0
        expected = a_f * colors[0] + (1 - a_f) * a_b * colors[1] + (1 - a_f) * (1 - a_b) * bg
        torch.testing.assert_close(
            img[0, row0 + dr, col0 + dc], expected, rtol=1e-6, atol=1e-9, msg=f"pixel offset {(dr, dc)}"
        )
        expected_alpha = torch.tensor(1 - (1 - a_f) * (1 - a_b), dtype=F64)
        torch.testing.assert_close(alpha[0, row0 + dr, col0 + dc, 0], expected_alpha, rtol=1e-6, atol=1e-9)
    # At the centre the front one is capped at 0.999 (gsplat's cap) and the back one shows through only by
    # 0.1 %.
    assert ref.MAX_ALPHA == 0.999
    centre = img[0, row0, col0]
    assert centre[1] > 0.998 and 0.0006 < centre[0] < 0.0008 and 0.0002 < centre[2] < 0.0004


def test_background_shows_exactly_where_no_gaussian_is():
    W, H = 45, 37
    viewmats, Ks = make_cameras(2, W, H, F32)
    # One small Gaussian near the top-left corner of camera 0 (in a corner tile).
    K0, R0, t0 = Ks[0].double(), viewmats[0, :3, :3].double(), viewmats[0, :3, 3].double()
    z = 4.0
    target = torch.tensor([(5.3 - K0[0, 2]) / K0[0, 0] * z, (6.1 - K0[1, 2]) / K0[1, 1] * z, z], dtype=F64)
    mean = (R0.T @ (target - t0)).float()
    bg = torch.tensor([[0.25, 0.5, 0.75], [0.9, 0.1, 0.4]])
    img, alpha, meta = rasterization(
        means=mean[None],
        quats=torch.tensor([[0.9, 0.1, -0.3, 0.2]]),
        scales=torch.tensor([[0.05, 0.08, 0.06]]),
        opacities=torch.tensor([0.9]),
        colors=torch.tensor([[1.0, 1.0, 1.0]]),
        viewmats=viewmats,
        Ks=Ks,
        width=W,
        height=H,
        backgrounds=bg,
        backend="cpp",
    )
    a = _alpha_field(meta["means2d"].detach(), meta["conics"], meta["opacities"], W, H)[:, 0]  # [C, H, W]
    empty = a < 0.5 * ALPHA_THRESHOLD
    assert empty[0].sum() > W * H - 60  # a small splat in camera 0 ...
    assert int((a[0] > 2 * ALPHA_THRESHOLD).sum()) >= 9
    for c in range(2):
        assert torch.equal(img[c][empty[c]], bg[c].expand(int(empty[c].sum()), 3)), f"camera {c}"
        assert torch.equal(alpha[c][empty[c]], torch.zeros(int(empty[c].sum()), 1)), f"camera {c}"
    # ... and where it is visible the pixels are not the background.
    covered = a[0] > 2 * ALPHA_THRESHOLD
    assert (img[0][covered] != bg[0]).any(-1).all() and (alpha[0][covered] > 0).all()


@pytest.mark.parametrize("reason", ["zero_gaussians", "behind", "off_screen", "transparent", "radius_clip"])
def test_nothing_visible_gives_background_and_zero_gradients(reason):
    W, H, C = 45, 37, 2
    n = 0 if reason == "zero_gaussians" else 12
    scene = make_scene(40, C, W, H, dtype=F64, seed=10, sh_degree=2, backgrounds=True)
    for key in ("means", "quats", "scales", "opacities", "colors"):
        scene[key] = scene[key][:n].clone()
    scene["means"][:, 2] = 4.0 + torch.arange(n, dtype=F64) * 0.1
    scene["means"][:, :2] = 0.0
    scene["scales"] = torch.full((n, 3), 0.1, dtype=F64)
    scene["opacities"] = torch.full((n,), 0.8, dtype=F64)
    kwargs = {}
    if reason == "behind":
        scene["means"][:, 2] = -scene["means"][:, 2]
    elif reason == "off_screen":
        scene["means"][:, 0] = 20.0
    elif reason == "transparent":
        scene["opacities"] = torch.full((n,), 0.5 / 255, dtype=F64)
    elif reason == "radius_clip":
        kwargs["radius_clip"] = 50.0
    leaves = requires_grad_copy(scene)
    img, alpha, meta = rasterization(
        **leaves, render_mode="RGB+D", rasterize_mode="antialiased", absgrad=True, backend="cpp", **kwargs
    )
    assert meta["n_isects"] == 0 and (meta["radii"] == 0).all()
    bg = scene["backgrounds"]
    expected = torch.cat([bg, torch.zeros(C, 1, dtype=F64)], -1)[:, None, None, :].expand(C, H, W, 4)
    assert torch.equal(img.detach(), expected)
    assert torch.equal(alpha.detach(), torch.zeros(C, H, W, 1, dtype=F64))
    w = random_like(img, 60)
    ((img * w).sum() + alpha.sum()).backward()
    for key in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks"):
        grad = leaves[key].grad
        assert grad is not None and torch.equal(grad, torch.zeros_like(grad)), key
    torch.testing.assert_close(leaves["backgrounds"].grad, w[..., :3].sum(dim=(1, 2)))
    assert torch.equal(meta["means2d"].absgrad, torch.zeros(C, n, 2, dtype=F64))


# The float64 kernels must implement the contract's decimal constants (docs/architecture.md), not their
# float32 roundings: 0.99f = 0.99000000953..., 1/255f = 0.0039215688593..., 1e-4f = 0.99999997e-4,
# 0.3f = 0.30000001192..., 3.33f = 3.32999992370...


def _single_pixel_render(impl, opacities):
    n = opacities.shape[0]
    means2d = torch.full((1, n, 2), 0.5, dtype=F64)  # on the centre of the only pixel: exp(-sigma) = 1
    conics = torch.tensor([1.0, 0.0, 1.0], dtype=F64).expand(1, n, 3).contiguous()
    colors = torch.eye(n, dtype=F64)[None].contiguous()  # channel k = blending weight of Gaussian k
    depths = torch.arange(n, dtype=F64)[None] + 1.0
    radii = torch.full((1, n, 2), 2, dtype=torch.int32)
    _, offsets, ids, _ = impl.bin_gaussians_to_tiles(means2d, radii, depths, 16, 1, 1)
    img, alpha = impl.rasterize_to_pixels(means2d, conics, colors, opacities[None], 1, 1, 16, offsets, ids)
    return img[0, 0, 0], alpha[0, 0, 0, 0]


@pytest.mark.parametrize(
    "constant", ["alpha_cap", "alpha_threshold", "transmittance_stop", "clip_margin", "max_extent"]
)
def test_float64_kernels_use_the_exact_contract_constants(constant):
    if constant == "alpha_cap":
        # alpha = min(0.999, 1.0) = 0.999 exactly (gsplat's cap).
        img, alpha = _single_pixel_render(ops, torch.tensor([1.0], dtype=F64))
        assert alpha.item() == pytest.approx(0.999, rel=0, abs=1e-15)
        assert img[0].item() == pytest.approx(0.999, rel=0, abs=1e-15)
    elif constant == "alpha_threshold":
        # alpha = 1/255 + 1e-11 >= 1/255 is blended; 1/255 - 1e-11 is not.
        img, alpha = _single_pixel_render(ops, torch.tensor([1 / 255 + 1e-11, 1 / 255 - 1e-11], dtype=F64))
        expected, _ = _single_pixel_render(ref, torch.tensor([1 / 255 + 1e-11, 1 / 255 - 1e-11], dtype=F64))
        assert expected.tolist() == [1 / 255 + 1e-11, 0.0]
        assert img.tolist() == pytest.approx(expected.tolist(), rel=1e-12, abs=0)
    elif constant == "transmittance_stop":
        # Three Gaussians of alpha 0.9 leave T = 1e-3; the fourth would bring T to 0.99999999e-4 <= 1e-4, so
        # it
        # is not blended (and neither is anything behind it).
        T = 1.0
        for a in (0.9, 0.9, 0.9):
            T = T * (1 - a)
        a4 = 1 - 1e-4 * (1 - 1e-8) / T
        assert T * (1 - a4) <= 1e-4 < T * (1 - a4) * (1 + 2e-8)
        opacities = torch.tensor([0.9, 0.9, 0.9, a4, 0.5], dtype=F64)
        img, alpha = _single_pixel_render(ops, opacities)
        expected, expected_alpha = _single_pixel_render(ref, opacities)
        assert expected[3:].tolist() == [0.0, 0.0]
        assert img.tolist() == pytest.approx(expected.tolist(), rel=1e-12, abs=1e-15)
        assert alpha.item() == pytest.approx(expected_alpha.item(), rel=1e-12, abs=0)
    elif constant == "clip_margin":
        # An isotropic Gaussian at x/z = 1.2, beyond lim_x_pos = (W - cx)/fx + 0.3 * 0.5 W/fx = 0.65: the
        # Jacobian uses tx = 0.65 z, so cov2d = s^2 (fx/z)^2 (1 + 0.65^2) in x and s^2 (fy/z)^2 in y.
        W, H, f, z, s = 64, 48, 64.0, 4.0, 2.0  # large enough to stay visible from outside the image
        viewmats = torch.eye(4, dtype=F64)[None]
        Ks = torch.tensor([[[f, 0.0, 32.0], [0.0, f, 24.0], [0.0, 0.0, 1.0]]], dtype=F64)
        args = (
            torch.tensor([[1.2 * z, 0.0, z]], dtype=F64),
            torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=F64),
            torch.full((1, 3), s, dtype=F64),
            viewmats,
            Ks,
            W,
            H,
        )
        radii, _, _, conics, _ = ops.project_gaussians(*args, eps2d=0.0)
        _, _, _, expected, _ = ref.project_gaussians(*args, eps2d=0.0)
        assert (radii > 0).all()
        lim = (W - 32.0) / f + 0.3 * (0.5 * W / f)
        a = s * s * (f / z) ** 2 * (1 + lim * lim)
        c = s * s * (f / z) ** 2
        hand = torch.tensor([1 / a, 0.0, 1 / c], dtype=F64)
        torch.testing.assert_close(expected[0, 0], hand, rtol=1e-13, atol=0)
        torch.testing.assert_close(conics[0, 0], hand, rtol=1e-13, atol=0)
    else:  # max_extent
        # Without opacities the extent is 3.33: radius = ceil(3.33 * sigma_px) with 3.33 * sigma_px just
        # above 7.
        f, z = 40.0, 4.0
        sigma_px = 7.0 * (1 + 5e-9) / 3.33
        assert math.ceil(3.33 * sigma_px) == 8
        radii, *_ = ops.project_gaussians(
            torch.tensor([[0.0, 0.0, z]], dtype=F64),
            torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=F64),
            torch.full((1, 3), sigma_px * z / f, dtype=F64),
            torch.eye(4, dtype=F64)[None],
            torch.tensor([[[f, 0.0, 20.0], [0.0, f, 20.0], [0.0, 0.0, 1.0]]], dtype=F64),
            40,
            40,
            eps2d=0.0,
        )
        expected, *_ = ref.project_gaussians(
            torch.tensor([[0.0, 0.0, z]], dtype=F64),
            torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=F64),
            torch.full((1, 3), sigma_px * z / f, dtype=F64),
            torch.eye(4, dtype=F64)[None],
            torch.tensor([[[f, 0.0, 20.0], [0.0, f, 20.0], [0.0, 0.0, 1.0]]], dtype=F64),
            40,
            40,
            eps2d=0.0,
        )
        assert expected.tolist() == [[[8, 8]]]
        assert radii.tolist() == expected.tolist()


# ---------------------------------------------------------------------------------------------------------
# 6. Non-contiguous inputs
# ---------------------------------------------------------------------------------------------------------


def _grads_equal(a, b, names):
    for x, y, name in zip(a, b, names):
        assert (x is None) == (y is None), name
        if x is not None:
            assert torch.equal(x, y), f"gradient of {name} differs for non-contiguous inputs"


@pytest.mark.parametrize(
    "op", ["project_gaussians", "spherical_harmonics", "bin_gaussians_to_tiles", "rasterize_to_pixels"]
)
def test_non_contiguous_inputs_give_identical_results(op):
    W, H = 45, 37
    scene = make_scene(200, 2, W, H, dtype=F64, seed=15)
    if op == "project_gaussians":
        names = ("means", "quats", "scales", "viewmats", "Ks")
        leaves = [scene[k].clone().requires_grad_(True) for k in names]
        layouts = (
            strided,
            transposed_back,
            strided,
            lambda t: t.transpose(1, 2).contiguous().transpose(1, 2),
            lambda t: t.transpose(1, 2).contiguous().transpose(1, 2),
        )
        opac = scene["opacities"]

        def run(tensors, opacities):
            return ops.project_gaussians(*tensors, W, H, opacities=opacities, calc_compensations=True)

        out = run(leaves, opac)
        out_nc = run([layout(t) for layout, t in zip(layouts, leaves)], strided(opac))
        assert all(not layout(t).is_contiguous() for layout, t in zip(layouts, leaves))
        outputs, outputs_nc = out[1:], out_nc[1:]
        assert torch.equal(out[0], out_nc[0])
    elif op == "spherical_harmonics":
        g = torch.Generator().manual_seed(16)
        names = ("dirs", "coeffs")
        leaves = [
            torch.randn(2, 50, 3, generator=g, dtype=F64).requires_grad_(True),
            torch.randn(2, 50, 16, 3, generator=g, dtype=F64).requires_grad_(True),
        ]
        masks = torch.rand(2, 50, generator=g) > 0.2
        outputs = [ops.spherical_harmonics(3, leaves[0], leaves[1], masks=masks)]
        dirs_nc = transposed_back(leaves[0])
        coeffs_nc = torch.cat([leaves[1], leaves[1][..., :4, :]], dim=-2)[..., :16, :]  # K sliced out of 20
        coeffs_nc = transposed_back(coeffs_nc)
        assert not coeffs_nc.is_contiguous()
        outputs_nc = [ops.spherical_harmonics(3, dirs_nc, coeffs_nc, masks=transposed_back(masks))]
    elif op == "bin_gaussians_to_tiles":
        radii, means2d, depths, _, _ = ops.project_gaussians(
            scene["means"],
            scene["quats"],
            scene["scales"],
            scene["viewmats"],
            scene["Ks"],
            W,
            H,
            opacities=scene["opacities"],
        )
        tw, th = tile_grid(W, H, 8)
        got = ops.bin_gaussians_to_tiles(means2d, radii, depths, 8, tw, th)
        got_nc = ops.bin_gaussians_to_tiles(
            strided(means2d), strided(radii), transposed_back(depths), 8, tw, th
        )
        for a, b in zip(got, got_nc):
            assert torch.equal(a, b)
        return
    else:
        radii, means2d, depths, conics, colors, opacities, bg = raster_inputs(scene, 5, 17, True)
        tw, th = tile_grid(W, H, 16)
        _, offsets, ids, _ = ops.bin_gaussians_to_tiles(means2d, radii, depths, 16, tw, th)
        names = ("means2d", "conics", "colors", "opacities", "backgrounds")
        leaves = [t.clone().requires_grad_(True) for t in (means2d, conics, colors, opacities, bg)]

        def run(m, cn, cl, o, b, offs, flat_ids):
            return ops.rasterize_to_pixels(m, cn, cl, o, W, H, 16, offs, flat_ids, backgrounds=b)

        outputs = run(*leaves, offsets, ids)
        offsets_nc = offsets.transpose(1, 2).contiguous().transpose(1, 2)
        ids_nc = torch.stack([ids, ids], -1)[:, 0]
        assert not offsets_nc.is_contiguous() and not ids_nc.is_contiguous()
        outputs_nc = run(
            strided(leaves[0]),
            transposed_back(leaves[1]),
            strided(leaves[2]),
            transposed_back(leaves[3]),
            transposed_back(leaves[4]),
            offsets_nc,
            ids_nc,
        )
    for a, b in zip(outputs, outputs_nc):
        if a is not None:
            assert torch.equal(a, b)
    # Backward with non-contiguous cotangents too.
    outputs = [o for o in outputs if o is not None]
    outputs_nc = [o for o in outputs_nc if o is not None]
    cotangents = [random_like(o, 70 + i) for i, o in enumerate(outputs)]
    cotangents_nc = [transposed_back(c) if c.dim() >= 2 else strided(c) for c in cotangents]
    grads = torch.autograd.grad(outputs, leaves, cotangents, allow_unused=True)
    grads_nc = torch.autograd.grad(outputs_nc, leaves, cotangents_nc, allow_unused=True)
    _grads_equal(grads, grads_nc, names)


@pytest.mark.parametrize("tile_size", [1, 6, 13, 64])
def test_tile_sizes_that_are_not_a_multiple_of_the_pixel_block(tile_size):
    """The kernels process 4x4 pixel blocks: tiles of other sizes are padded, and must still match."""
    scene = requires_grad_copy(
        make_scene(n=120, n_cameras=2, width=45, height=37, dtype=torch.float64, seed=1, tile_size=tile_size)
    )
    reference = requires_grad_copy(scene)
    colors, alphas, _ = rasterization(**scene, backend="cpp")
    ref_colors, ref_alphas, _ = rasterization(**reference, backend="reference")
    torch.testing.assert_close(colors, ref_colors, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(alphas, ref_alphas, rtol=1e-9, atol=1e-9)
    cotangent = random_like(colors, 5)
    (colors * cotangent).sum().backward()
    (ref_colors * cotangent).sum().backward()
    for name in DIFFERENTIABLE_KEYS:
        if scene.get(name) is not None:
            assert relative_error(scene[name].grad, reference[name].grad) < 1e-8, name
