"""gsplat_py as a drop-in for gsplat 1.5.3's ``rasterization``: its signature and defaults, packed mode
(identical numbers, sparse gradients), leading batch dimensions, covariances, fisheye cameras, SH degree 4,
gsplat's intersection ids, the options that raise NotImplementedError, and gsplat's image-fitting example
with only its import changed. Modelled on the cases of gsplat's tests/test_basic.py, test_rasterization.py
and test_strategy.py (our own code and scenes)."""

import inspect
import math

import pytest
import torch
from conftest import make_scene, relative_error, requires_grad_copy

import gsplat_py
from gsplat_py import rasterization, rasterization_2dgs
from gsplat_py.rendering import _backend
from gsplat_py.rendering import reference as ref
from gsplat_py.strategy import DefaultStrategy

F64 = torch.float64
BACKENDS = ["cpp", "reference"] if _backend.extension_available() else ["reference"]
needs_cpp = pytest.mark.skipif(not _backend.extension_available(), reason="gsplat_py._C is not built")

# gsplat 1.5.3's rasterization: the parameters in order, with their defaults (read from its rendering.py).
GSPLAT_SIGNATURE = [
    ("means", None),
    ("quats", None),
    ("scales", None),
    ("opacities", None),
    ("colors", None),
    ("viewmats", None),
    ("Ks", None),
    ("width", None),
    ("height", None),
    ("near_plane", 0.01),
    ("far_plane", 1e10),
    ("radius_clip", 0.0),
    ("eps2d", 0.3),
    ("sh_degree", None),
    ("packed", True),
    ("tile_size", 16),
    ("backgrounds", None),
    ("render_mode", "RGB"),
    ("sparse_grad", False),
    ("absgrad", False),
    ("rasterize_mode", "classic"),
    ("channel_chunk", 32),
    ("distributed", False),
    ("camera_model", "pinhole"),
    ("segmented", False),
    ("covars", None),
    ("with_ut", False),
    ("with_eval3d", False),
    ("radial_coeffs", None),
    ("tangential_coeffs", None),
    ("thin_prism_coeffs", None),
    ("ftheta_coeffs", None),
    ("rolling_shutter", "GLOBAL"),
    ("viewmats_rs", None),
]
GSPLAT_META_KEYS = {
    "batch_ids",
    "camera_ids",
    "gaussian_ids",
    "radii",
    "means2d",
    "depths",
    "conics",
    "opacities",
    "tile_width",
    "tile_height",
    "tiles_per_gauss",
    "isect_ids",
    "flatten_ids",
    "isect_offsets",
    "width",
    "height",
    "tile_size",
    "n_batches",
    "n_cameras",
}
GAUSSIAN_KEYS = ("means", "quats", "scales", "opacities", "colors")


def _args(scene: dict) -> dict:
    return {k: v for k, v in scene.items() if k != "camera_model" or v != "pinhole"}


def test_signature_has_gsplats_positional_order_and_defaults():
    params = list(inspect.signature(rasterization).parameters.values())
    positional = [p for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in positional] == [name for name, _ in GSPLAT_SIGNATURE]
    for p, (name, default) in zip(positional, GSPLAT_SIGNATURE):
        if default is None:
            assert p.default in (inspect.Parameter.empty, None), name
        elif name == "rolling_shutter":
            assert p.default.name == default
        else:
            assert p.default == default and type(p.default) is type(default), name
    # gsplat_py's own options are keyword-only, after gsplat's parameters
    assert [p.name for p in params if p.kind == p.KEYWORD_ONLY] == ["backend", "sh_rest"]


@pytest.mark.parametrize(
    "option, value",
    [
        ("with_ut", True),
        ("with_eval3d", True),
        ("tangential_coeffs", torch.zeros(1, 2)),
        ("thin_prism_coeffs", torch.zeros(1, 4)),
        ("ftheta_coeffs", object()),
        ("rolling_shutter", gsplat_py.RollingShutterType.ROLLING_TOP_TO_BOTTOM),
        ("viewmats_rs", torch.eye(4)[None]),
        ("camera_model", "ftheta"),
        ("radial_coeffs", torch.zeros(1, 6)),  # pinhole radial distortion
    ],
)
def test_unimplemented_options_raise_not_implemented_naming_the_option(option, value):
    scene = make_scene(n=20, n_cameras=1, dtype=torch.float32)
    with pytest.raises(NotImplementedError, match=option.split("_coeffs")[0]):
        rasterization(**_args(scene), **{option: value})


def test_rasterization_2dgs_is_exported():
    assert gsplat_py.rendering.rasterization_2dgs is rasterization_2dgs  # tests/test_2dgs_render.py tests it


def test_positional_call_in_gsplats_order():
    scene = make_scene(n=60, n_cameras=2, dtype=F64)
    background = torch.full((2, 3), 0.25, dtype=F64)
    positional = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]
    # ..., width, height, near, far, radius_clip, eps2d, sh_degree, packed, tile_size, backgrounds, mode
    got, _, meta = rasterization(
        *positional, scene["width"], scene["height"], 0.01, 1e10, 0.0, 0.3, None, False, 8, background, "RGB"
    )
    expected, _, _ = rasterization(**_args(scene), packed=False, tile_size=8, backgrounds=background)
    assert torch.equal(got, expected)
    assert meta["tile_size"] == 8 and meta["gaussian_ids"] is None


def test_integral_float_sizes_are_accepted_and_others_named():
    scene = make_scene(n=30, n_cameras=1, dtype=torch.float32)
    args = _args(scene)
    expected, _, _ = rasterization(**args)
    got, _, _ = rasterization(**{**args, "width": float(args["width"]), "height": float(args["height"])})
    assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="width"):
        rasterization(**{**args, "width": args["width"] + 0.5})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "sh_degree, per_camera, mode, rasterize_mode",
    [
        (None, False, "RGB", "classic"),
        (3, False, "RGB+ED", "antialiased"),
        (2, True, "RGB+D", "classic"),
        (None, True, "ED", "antialiased"),
    ],
)
def test_packed_equals_unpacked_renders_and_gradients(backend, sh_degree, per_camera, mode, rasterize_mode):
    scene = make_scene(n=200, n_cameras=3, sh_degree=sh_degree, backgrounds=mode != "ED")
    if per_camera:
        scene["colors"] = scene["colors"][None].expand(3, *scene["colors"].shape) * torch.tensor(
            [1.0, 0.8, 1.1], dtype=F64
        ).reshape(3, *[1] * scene["colors"].dim())
    results = {}
    for packed in (False, True):
        s = requires_grad_copy(scene)
        colors, alphas, meta = rasterization(
            **_args(s), packed=packed, render_mode=mode, rasterize_mode=rasterize_mode, backend=backend
        )
        weights = torch.linspace(-1, 1, colors.numel(), dtype=F64).reshape(colors.shape)
        ((colors * weights).sum() + alphas.sum()).backward()
        results[packed] = (
            colors,
            alphas,
            meta,
            {k: s[k].grad for k in ("means", "quats", "scales", "colors")},
        )
    (c0, a0, m0, g0), (c1, a1, m1, g1) = results[False], results[True]
    torch.testing.assert_close(c1, c0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a1, a0, rtol=1e-12, atol=1e-12)
    for key in g0:
        torch.testing.assert_close(g1[key], g0[key], rtol=1e-10, atol=1e-12, msg=key)
    # The packed entries are exactly the visible pairs of the unpacked meta, in (camera, Gaussian) order.
    visible = torch.nonzero((m0["radii"] != 0).any(dim=-1))
    assert torch.equal(m1["camera_ids"], visible[:, 0]) and torch.equal(m1["gaussian_ids"], visible[:, 1])
    assert torch.equal(m1["batch_ids"], torch.zeros_like(m1["camera_ids"]))
    torch.testing.assert_close(m1["means2d"], m0["means2d"][visible[:, 0], visible[:, 1]])
    assert torch.equal(m1["radii"], m0["radii"][visible[:, 0], visible[:, 1]])
    assert set(m1) >= GSPLAT_META_KEYS and set(m0) >= GSPLAT_META_KEYS
    assert m1["n_isects"] == m0["n_isects"] and m1["n_batches"] == 1


@needs_cpp
def test_packed_meta_and_isect_ids_match_the_reference():
    scene = make_scene(n=200, n_cameras=3)
    _, _, got = rasterization(**_args(scene), backend="cpp")
    _, _, expected = rasterization(**_args(scene), backend="reference")
    for key in (
        "batch_ids",
        "camera_ids",
        "gaussian_ids",
        "radii",
        "flatten_ids",
        "isect_ids",
        "isect_offsets",
    ):
        assert torch.equal(got[key], expected[key]), key


def test_isect_ids_encode_image_tile_and_depth_as_gsplat():
    scene = make_scene(n=150, n_cameras=2)
    _, _, meta = rasterization(**_args(scene), packed=False, backend=BACKENDS[0])
    ids, flatten = meta["isect_ids"], meta["flatten_ids"].long()
    tiles = meta["tile_width"] * meta["tile_height"]
    tile_bits = tiles.bit_length()
    assert (ids & 0xFFFFFFFF).tolist() == [
        int(torch.tensor([d], dtype=torch.float32).view(torch.int32).item()) & 0xFFFFFFFF
        for d in meta["depths"].reshape(-1)[flatten].tolist()
    ]
    image, tile = ids >> (32 + tile_bits), (ids >> 32) & ((1 << tile_bits) - 1)
    assert torch.equal(image, flatten // meta["radii"].shape[1])
    # isect_offsets are where each (image, tile) key starts in the sorted ids
    keys = image * tiles + tile
    assert torch.equal(keys, torch.sort(keys).values)
    offsets = torch.searchsorted(keys, torch.arange(2 * tiles))
    assert torch.equal(offsets.to(torch.int32), meta["isect_offsets"].reshape(-1))


@needs_cpp
def test_sparse_gradients_equal_the_dense_ones_at_their_indices():
    scene = make_scene(n=200, n_cameras=2)
    grads = {}
    for sparse in (False, True):
        s = requires_grad_copy(scene)
        colors, _, meta = rasterization(**_args(s), sparse_grad=sparse, backend="cpp")
        colors.sum().backward()
        grads[sparse] = {k: s[k].grad for k in ("means", "quats", "scales")}
    for key, dense in grads[False].items():
        sparse = grads[True][key]
        if key == "means":  # the SH-free colour path adds nothing; means also get no dense part here
            pass
        assert sparse.is_sparse, key
        torch.testing.assert_close(sparse.to_dense(), dense, rtol=1e-12, atol=1e-14, msg=key)
        rows = sparse.coalesce().indices()[0]
        assert torch.equal(rows, torch.unique(meta["gaussian_ids"])), key
    with pytest.raises(ValueError, match="sparse_grad"):
        rasterization(**_args(scene), packed=False, sparse_grad=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("packed", [False, True])
def test_batch_dimensions_equal_a_loop_over_the_batch(backend, packed):
    scenes = [
        make_scene(n=80, n_cameras=2, seed=seed, sh_degree=1, backgrounds=True) for seed in (1, 2, 3, 4)
    ]
    batched = {
        k: torch.stack([s[k] for s in scenes]).reshape(2, 2, *scenes[0][k].shape)
        for k in scenes[0]
        if isinstance(scenes[0][k], torch.Tensor)
    }
    batched = requires_grad_copy({**scenes[0], **batched})
    colors, alphas, meta = rasterization(**_args(batched), packed=packed, backend=backend)
    assert colors.shape == (2, 2, 2, scenes[0]["height"], scenes[0]["width"], 3)
    assert meta["n_batches"] == 4
    colors.sum().backward()
    for b, scene in enumerate(scenes):
        s = requires_grad_copy(scene)
        expected, expected_alphas, _ = rasterization(**_args(s), packed=packed, backend=backend)
        expected.sum().backward()
        torch.testing.assert_close(colors.reshape(4, *expected.shape)[b], expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alphas.reshape(4, *expected_alphas.shape)[b], expected_alphas)
        for key in ("means", "quats", "viewmats"):
            got = batched[key].grad.reshape(4, *s[key].shape)[b]
            torch.testing.assert_close(got, s[key].grad, rtol=1e-10, atol=1e-12, msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "packed, per_camera, sh_degree, rest_bases, batch",
    [
        (False, False, 3, 15, ()),  # the trainer's call
        (True, False, 2, 15, ()),  # more bases than the degree reads: theirs get zero gradient
        (False, True, 1, 3, ()),
        (True, True, 3, 15, ()),
        (False, False, 0, 0, ()),  # no rest at all
        (True, False, 1, 3, (2,)),
    ],
)
def test_sh_rest_equals_the_concatenated_coefficients(
    backend, packed, per_camera, sh_degree, rest_bases, batch
):
    """``colors`` holding the first SH coefficient and ``sh_rest`` the others renders, and back-propagates,
    exactly as their concatenation does: the same kernels read the same values, in place."""
    scene = make_scene(n=150, n_cameras=3, sh_degree=3, backgrounds=True)
    g = torch.Generator().manual_seed(7)
    lead = (*batch, 3) if per_camera else batch
    sh0 = torch.randn(*lead, 150, 1, 3, generator=g, dtype=F64)
    shN = torch.randn(*lead, 150, rest_bases, 3, generator=g, dtype=F64) * 0.3
    if batch:
        scene = {
            k: v.expand(*batch, *v.shape) if isinstance(v, torch.Tensor) else v for k, v in scene.items()
        }
    scene = {**scene, "sh_degree": sh_degree}
    results = []
    for split in (False, True):
        s = requires_grad_copy(scene)
        s["sh0"], s["shN"] = (x.clone().requires_grad_(True) for x in (sh0, shN))
        sh = (
            {"colors": s["sh0"], "sh_rest": s["shN"]}
            if split
            else {"colors": torch.cat([s["sh0"], s["shN"]], -2)}
        )
        args = {k: v for k, v in _args(s).items() if k not in ("sh0", "shN", "colors")}
        colors, alphas, _ = rasterization(**args, **sh, packed=packed, backend=backend)
        weights = torch.linspace(-1, 1, colors.numel(), dtype=F64).reshape(colors.shape)
        ((colors * weights).sum() + alphas.sum()).backward()
        results.append((colors, alphas, {k: s[k].grad for k in ("sh0", "shN", "means", "viewmats")}))
    (c0, a0, g0), (c1, a1, g1) = results
    assert torch.equal(c1, c0) and torch.equal(a1, a0)
    for key in g0:
        assert torch.equal(g1[key], g0[key]), key
    assert g1["sh0"].abs().sum() > 0
    if rest_bases:
        used = (sh_degree + 1) ** 2 - 1
        assert g1["shN"][..., :used, :].abs().sum() > 0 or used == 0
        assert torch.equal(g1["shN"][..., used:, :], torch.zeros_like(g1["shN"][..., used:, :]))


@pytest.mark.parametrize(
    "colors_bases, rest_bases, sh_degree, message",
    [
        (1, 15, None, "sh_rest: SH coefficients need sh_degree"),
        (16, 15, 3, "colors: "),
        (1, 7, 3, "sh_rest: "),
    ],
)
def test_bad_sh_rest_is_a_value_error_naming_it(colors_bases, rest_bases, sh_degree, message):
    scene = make_scene(n=20, n_cameras=1)
    args = {k: v for k, v in _args(scene).items() if k not in ("colors", "sh_degree")}
    colors = torch.zeros(20, colors_bases, 3, dtype=F64)
    with pytest.raises(ValueError, match=message):
        rasterization(
            **args, colors=colors, sh_rest=torch.zeros(20, rest_bases, 3, dtype=F64), sh_degree=sh_degree
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_covars_instead_of_quats_and_scales(backend):
    scene = requires_grad_copy(make_scene(n=120, n_cameras=2))
    expected, _, _ = rasterization(**_args(scene), backend=backend)
    q = scene["quats"] / scene["quats"].norm(dim=-1, keepdim=True)
    w, x, y, z = q.detach().unbind(-1)
    R = torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )
    M = R * scene["scales"].detach()[:, None, :]
    covars = (M @ M.transpose(-1, -2)).requires_grad_(True)
    args = {**_args(scene), "quats": None, "scales": None}
    got, _, _ = rasterization(**args, covars=covars, backend=backend)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)
    got.sum().backward()
    assert covars.grad is not None and covars.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_depth_modes_ignore_backgrounds_as_gsplat(backend):
    scene = make_scene(n=100, n_cameras=2, backgrounds=True)  # [C, 3] backgrounds
    for mode in ("D", "ED"):
        with_bg, _, _ = rasterization(**_args(scene), render_mode=mode, backend=backend)
        without, _, _ = rasterization(
            **{**_args(scene), "backgrounds": None}, render_mode=mode, backend=backend
        )
        assert torch.equal(with_bg, without)


# ---- SH degree 4 ------------------------------------------------------------------------------------


@needs_cpp
def test_sh_degree_4_matches_the_reference_and_gradcheck():
    from gsplat_py.rendering import ops

    g = torch.Generator().manual_seed(4)
    dirs = torch.randn(7, 3, generator=g, dtype=F64, requires_grad=True)
    coeffs = torch.randn(7, 25, 3, generator=g, dtype=F64, requires_grad=True)
    torch.testing.assert_close(
        ops.spherical_harmonics(4, dirs, coeffs), ref.spherical_harmonics(4, dirs, coeffs)
    )
    assert torch.autograd.gradcheck(lambda d, c: ops.spherical_harmonics(4, d, c), (dirs, coeffs))
    # Degree 4 adds to degree 3 exactly the nine new bases (zero coefficients change nothing).
    padded = torch.cat([coeffs[:, :16], torch.zeros(7, 9, 3, dtype=F64)], dim=1)
    torch.testing.assert_close(
        ops.spherical_harmonics(4, dirs, padded), ops.spherical_harmonics(3, dirs, coeffs)
    )


def test_reference_sh_degree_4_bases_are_orthonormal():
    # Monte Carlo over the sphere would be noisy: a Lebedev-free check with a dense Fibonacci grid.
    n = 20000
    i = torch.arange(n, dtype=F64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = torch.sqrt(1 - z * z)
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    basis = torch.stack(
        [
            ref.spherical_harmonics(4, dirs, torch.eye(25, dtype=F64)[k][None, :, None].expand(n, 25, 3))[
                :, 0
            ]
            for k in range(25)
        ],
        -1,
    )
    gram = basis.T @ basis * (4 * math.pi / n)
    torch.testing.assert_close(gram, torch.eye(25, dtype=F64), atol=1e-3, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rasterization_at_sh_degree_4(backend):
    scene = make_scene(n=100, n_cameras=2, sh_degree=3)
    g = torch.Generator().manual_seed(0)
    scene["colors"] = torch.cat([scene["colors"], 0.2 * torch.randn(100, 9, 3, generator=g, dtype=F64)], 1)
    colors, _, _ = rasterization(**{**_args(scene), "sh_degree": 4}, backend=backend)
    degree3, _, _ = rasterization(**_args(scene), backend=backend)
    assert colors.shape == degree3.shape and not torch.allclose(colors, degree3)


# ---- fisheye ---------------------------------------------------------------------------------------


def _fisheye_scene(n=150, radial=True):
    scene = make_scene(n=n, n_cameras=2)
    scene["camera_model"] = "fisheye"
    if radial:
        scene["radial_coeffs"] = torch.tensor(
            [[0.05, -0.01, 0.002, -0.0005], [0.0, 0.0, 0.0, 0.0]], dtype=F64
        )
    return scene


@needs_cpp
@pytest.mark.parametrize("radial", [False, True])
def test_fisheye_compiled_matches_the_reference(radial):
    scene = _fisheye_scene(radial=radial)
    results = []
    for backend in ("cpp", "reference"):
        s = requires_grad_copy(scene)
        colors, alphas, meta = rasterization(**s, packed=False, backend=backend)
        (colors.sum() + alphas.sum()).backward()
        results.append((colors, meta, {k: s[k].grad for k in ("means", "quats", "scales", "viewmats", "Ks")}))
    (c0, m0, g0), (c1, m1, g1) = results
    assert torch.equal(m0["radii"], m1["radii"]) and (m0["radii"] > 0).any()
    torch.testing.assert_close(m0["means2d"], m1["means2d"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m0["conics"], m1["conics"], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(c0, c1, rtol=1e-9, atol=1e-10)
    for key in g0:
        assert relative_error(g0[key], g1[key]) < 1e-7, key


@needs_cpp
def test_fisheye_projection_gradcheck_float64():
    from gsplat_py.rendering import ops

    scene = _fisheye_scene(n=12)
    radial = scene["radial_coeffs"]
    means = scene["means"].clone().requires_grad_(True)
    quats, scales = scene["quats"].clone().requires_grad_(True), scene["scales"].clone().requires_grad_(True)
    viewmats, Ks = scene["viewmats"].clone().requires_grad_(True), scene["Ks"].clone().requires_grad_(True)

    def project(m, q, s, v, k):
        radii, means2d, depths, conics, _ = ops.project_gaussians(
            m, q, s, v, k, scene["width"], scene["height"], camera_model="fisheye", radial_coeffs=radial
        )
        assert (radii > 0).any()
        return means2d, depths, conics

    assert torch.autograd.gradcheck(project, (means, quats, scales, viewmats, Ks), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fisheye_equals_pinhole_near_the_centre(backend):
    # Small Gaussians within 1.5 px of the principal point of a long lens: the equidistant model moves a point
    # at angle theta by f (theta - tan theta) ~ f theta^3 / 3, far below a pixel there.
    g = torch.Generator().manual_seed(5)
    n, W, H, f = 40, 33, 31, 2000.0
    z = 4.0 + torch.rand(n, generator=g, dtype=F64)
    xy = (torch.rand(n, 2, generator=g, dtype=F64) - 0.5) * 3.0 * z[:, None] / f
    args = dict(
        means=torch.cat([xy, z[:, None]], -1),
        quats=torch.randn(n, 4, generator=g, dtype=F64),
        scales=torch.full((n, 3), 0.004, dtype=F64),
        opacities=torch.full((n,), 0.5, dtype=F64),
        colors=torch.rand(n, 3, generator=g, dtype=F64),
        viewmats=torch.eye(4, dtype=F64)[None],
        Ks=torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], dtype=F64)[None],
        width=W,
        height=H,
        backend=backend,
    )
    pinhole, _, _ = rasterization(**args)
    fisheye, _, meta = rasterization(**args, camera_model="fisheye")
    assert (meta["radii"] > 0).all()
    assert (fisheye - pinhole).abs().max() < 1e-4
    assert pinhole.abs().max() > 0.1


# ---- strategies -------------------------------------------------------------------------------------


def test_default_strategy_statistics_are_the_same_packed_and_unpacked():
    scene = make_scene(n=120, n_cameras=2, dtype=torch.float32)
    states = []
    for packed in (False, True):
        params = {k: torch.nn.Parameter(scene[k].clone()) for k in ("means", "quats", "scales", "opacities")}
        optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
        strategy = DefaultStrategy(refine_scale2d_stop_iter=10)
        state = strategy.initialize_state()
        colors, _, info = rasterization(
            params["means"],
            params["quats"],
            params["scales"],
            torch.sigmoid(params["opacities"]),
            scene["colors"],
            scene["viewmats"],
            scene["Ks"],
            scene["width"],
            scene["height"],
            packed=packed,
        )
        strategy.step_pre_backward(params, optimizers, state, 1, info)
        colors.sum().backward()
        strategy.step_post_backward(params, optimizers, state, 1, info, packed)  # gsplat's positional form
        states.append(state)
    for key in ("grad2d", "count", "radii"):
        torch.testing.assert_close(states[1][key], states[0][key], msg=key)
    assert states[0]["count"].sum() > 0


# ---- gsplat's examples/image_fitting.py with only the import changed ---------------------------------


def test_image_fitting_example_logic_fits_an_image():
    # The example's set-up and loop (its random Gaussians in a 2-unit cube 8 units in front of a 90-degree
    # camera, Adam on all five tensors, MSE), rewritten here, calling rasterization as it does.
    torch.manual_seed(0)
    H, W, num_points, iterations = 24, 32, 300, 60
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    gt_image = torch.stack([xx, yy, 0.5 * torch.ones_like(xx)], -1)
    focal = 0.5 * float(W) / math.tan(0.5 * math.pi / 2.0)
    means = (2 * (torch.rand(num_points, 3) - 0.5)).requires_grad_(True)
    scales = torch.rand(num_points, 3).requires_grad_(True)
    rgbs = torch.rand(num_points, 3).requires_grad_(True)
    u, v, w = (torch.rand(num_points, 1) for _ in range(3))
    quats = torch.cat(
        [
            torch.sqrt(1.0 - u) * torch.sin(2.0 * math.pi * v),
            torch.sqrt(1.0 - u) * torch.cos(2.0 * math.pi * v),
            torch.sqrt(u) * torch.sin(2.0 * math.pi * w),
            torch.sqrt(u) * torch.cos(2.0 * math.pi * w),
        ],
        -1,
    ).requires_grad_(True)
    opacities = torch.ones(num_points).requires_grad_(True)
    viewmat = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 8.0], [0, 0, 0, 1.0]])
    K = torch.tensor([[focal, 0, W / 2], [0, focal, H / 2], [0, 0, 1]])
    optimizer = torch.optim.Adam([rgbs, means, scales, opacities, quats], 0.01)
    losses = []
    for _ in range(iterations):
        renders = rasterization(
            means,
            quats / quats.norm(dim=-1, keepdim=True),
            scales,
            torch.sigmoid(opacities),
            torch.sigmoid(rgbs),
            viewmat[None],
            K[None],
            W,
            H,
            packed=False,
        )[0]
        loss = torch.nn.functional.mse_loss(renders[0], gt_image)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    scene = make_scene(n=80, n_cameras=2, dtype=torch.float32)
    halves = {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in scene.items()}
    expected, _, _ = rasterization(
        **_args({k: v.float() if isinstance(v, torch.Tensor) else v for k, v in halves.items()})
    )
    means = halves["means"].clone().requires_grad_(True)
    colors, _, _ = rasterization(**{**_args(halves), "means": means})
    assert colors.dtype == torch.float32
    torch.testing.assert_close(colors, expected)
    colors.sum().backward()
    assert means.grad.dtype == dtype and means.grad.abs().sum() > 0


def test_a_fisheye_view_trains_and_evaluates_with_the_fisheye_model():
    from gsplat_py.data.colmap_dataset import View
    from gsplat_py.training.evaluation import render_view

    scene = make_scene(n=100, n_cameras=1, dtype=torch.float32)
    params = {
        "means": scene["means"],
        "quats": scene["quats"],
        "scales": torch.log(scene["scales"]),
        "opacities": torch.logit(scene["opacities"].clamp(1e-4, 1 - 1e-4)),
        "sh0": ((scene["colors"] - 0.5) / 0.28209479177387814)[:, None, :],
        "shN": torch.zeros(100, 0, 3),
    }
    radial = torch.tensor([0.05, -0.01, 0.003, -0.001])
    view = View(
        0,
        "v.png",
        torch.zeros(scene["height"], scene["width"], 3, dtype=torch.uint8),
        scene["Ks"][0],
        scene["viewmats"][0],
        camera_model="fisheye",
        radial_coeffs=radial,
    )
    got, _, _ = render_view(params, view, sh_degree=0)
    args = {**_args(scene), "colors": params["sh0"], "sh_degree": 0}
    expected, _, _ = rasterization(**args, camera_model="fisheye", radial_coeffs=radial[None])
    pinhole, _, _ = rasterization(**args)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-4)  # exp(log s), sigmoid(logit o) round trips
    assert (got - pinhole).abs().max() > 0.05
