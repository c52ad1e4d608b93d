"""2D Gaussian splatting (``rasterization_2dgs``): gsplat's signature and outputs, analytic cases with exact
answers, and (when the extension is built) the compiled ops against the plain-PyTorch reference."""

import inspect
import math

import pytest
import torch
from test_dropin import GSPLAT_META_KEYS, GSPLAT_SIGNATURE

from gsplat_py import rasterization_2dgs
from gsplat_py.rendering import _backend
from gsplat_py.rendering import reference_2dgs as ref2d
from gsplat_py.rendering.pipeline_2dgs import depth_to_normal
from gsplat_py.tools.frames import quaternion_from_rotation

F64 = torch.float64
BACKENDS = ["cpp", "reference"] if _backend.extension_available() else ["reference"]
needs_cpp = pytest.mark.skipif(not _backend.extension_available(), reason="gsplat_py._C is not built")

# gsplat 1.5.3's rasterization_2dgs: rasterization's first 20 parameters (packed defaulting to False), then
# distloss and depth_mode (from its rendering.py).
GSPLAT_2DGS_SIGNATURE = [
    (name, False if name == "packed" else default) for name, default in GSPLAT_SIGNATURE[:20]
]
GSPLAT_2DGS_SIGNATURE += [("distloss", False), ("depth_mode", "expected")]
assert GSPLAT_2DGS_SIGNATURE[19][0] == "absgrad"
# gsplat 1.5.3's meta keys of rasterization_2dgs: rasterization's, with the ray transforms and normals instead
# of the conics, the distortion and the densification gradient, and no batch keys.
GSPLAT_2DGS_META = (GSPLAT_META_KEYS - {"batch_ids", "conics", "n_batches"}) | {
    "ray_transforms",
    "normals",
    "render_distort",
    "gradient_2dgs",
}


def test_signature_is_gsplats():
    params = list(inspect.signature(rasterization_2dgs).parameters.values())
    positional = [p for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in positional] == [name for name, _ in GSPLAT_2DGS_SIGNATURE]
    for p, (name, default) in zip(positional, GSPLAT_2DGS_SIGNATURE):
        if default is None:
            assert p.default in (inspect.Parameter.empty, None), name
        else:
            assert p.default == default and type(p.default) is type(default), name
    assert [p.name for p in params if p.kind == p.KEYWORD_ONLY] == ["backend"]


def random_surfels(n: int = 60, n_cameras: int = 2, dtype=F64, seed: int = 0, sh_degree: int | None = None):
    """Random surfels in front of C cameras looking at the origin from different sides (keyword arguments)."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=F64) - 0.5) * 1.6
    quats = torch.randn(n, 4, generator=g, dtype=F64)
    scales = torch.exp(torch.rand(n, 3, generator=g, dtype=F64) * 2.5 - 3.5)
    opacities = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=F64)
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g, dtype=F64)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=F64) * 0.3
    viewmats = []
    for c in range(n_cameras):
        angle = 0.7 * c
        centre = torch.tensor([3.0 * math.sin(angle), 0.3 * c, -3.0 * math.cos(angle)], dtype=F64)
        forward = -centre / centre.norm()
        right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=F64), forward)
        right = right / right.norm()
        down = torch.linalg.cross(forward, right)
        rotation = torch.stack([right, down, forward])  # world -> camera rows
        viewmat = torch.eye(4, dtype=F64)
        viewmat[:3, :3] = rotation
        viewmat[:3, 3] = -rotation @ centre
        viewmats.append(viewmat)
    width, height = 37, 29
    Ks = torch.tensor([[40.0, 0.0, 18.1], [0.0, 42.0, 14.3], [0.0, 0.0, 1.0]], dtype=F64).expand(
        n_cameras, 3, 3
    )
    scene = dict(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=torch.stack(viewmats),
        Ks=Ks.clone(),
        width=width,
        height=height,
        sh_degree=sh_degree,
    )
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) else v for k, v in scene.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("render_mode", ["RGB", "D", "ED", "RGB+D", "RGB+ED"])
def test_outputs_shapes_dtypes_and_meta_as_gsplat(backend, render_mode):
    scene = random_surfels(dtype=torch.float32)
    colors, alphas, normals, surf_normals, distort, median, meta = rasterization_2dgs(
        **scene, render_mode=render_mode, backend=backend
    )
    C, H, W = 2, scene["height"], scene["width"]
    channels = {"RGB": 3, "D": 1, "ED": 1, "RGB+D": 4, "RGB+ED": 4}[render_mode]
    assert colors.shape == (C, H, W, channels)
    assert alphas.shape == (C, H, W, 1)
    assert normals.shape == (C, H, W, 3)
    assert distort.shape == median.shape == (C, H, W, 1)
    if render_mode in ("RGB+D", "RGB+ED"):
        assert surf_normals is not None and surf_normals.shape == (C, H, W, 3)
    else:
        assert surf_normals is None
    for x in (colors, alphas, normals, distort, median):
        assert x.dtype == torch.float32
    assert GSPLAT_2DGS_META <= set(meta)
    N = 60
    assert meta["radii"].shape == (C, N, 2) and meta["radii"].dtype == torch.int32
    assert meta["means2d"].shape == (C, N, 2)
    assert meta["depths"].shape == (C, N)
    assert meta["ray_transforms"].shape == (C, N, 3, 3)
    assert meta["normals"].shape == (C, N, 3)
    assert meta["opacities"].shape == (C, N)
    assert meta["gradient_2dgs"].shape == (C, N, 2)
    assert meta["camera_ids"] is None and meta["gaussian_ids"] is None
    assert meta["render_distort"] is distort
    assert (meta["radii"] > 0).all(-1).sum() > 20  # most surfels are visible


def test_surf_normals_drop_a_leading_one_as_gsplat():
    scene = random_surfels(n_cameras=1, dtype=torch.float32)
    out = rasterization_2dgs(**scene, render_mode="RGB+ED", backend="reference")
    assert out[3].shape == (scene["height"], scene["width"], 3)


def facing_surfel(depth: float = 2.0, offset=(0.1, -0.05)):
    """One surfel facing a rotated camera at ``depth`` in front of it, seen slightly off-centre."""
    angle = 0.4
    rotation = torch.tensor(
        [[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0], [-math.sin(angle), 0.0, math.cos(angle)]],
        dtype=F64,
    )  # camera -> world
    centre = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    viewmat = torch.eye(4, dtype=F64)
    viewmat[:3, :3] = rotation.T
    viewmat[:3, 3] = -rotation.T @ centre
    mean_c = torch.tensor([offset[0], offset[1], depth], dtype=F64)
    K = torch.tensor([[30.0, 0.0, 16.0], [0.0, 32.0, 12.0], [0.0, 0.0, 1.0]], dtype=F64)
    return (
        dict(
            means=(rotation @ mean_c + centre)[None],
            # the surfel's axes are the camera's: its plane is parallel to the image, its normal the view axis
            quats=quaternion_from_rotation(rotation)[None].to(F64),
            scales=torch.tensor([[0.4, 0.3, 1e-3]], dtype=F64),
            opacities=torch.tensor([0.8], dtype=F64),
            colors=torch.tensor([[0.2, 0.5, 0.9]], dtype=F64),
            viewmats=viewmat[None],
            Ks=K[None],
            width=32,
            height=24,
        ),
        rotation,
        mean_c,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_facing_surfel_gives_its_plane_depth_normal_and_exact_kernel(backend):
    scene, rotation, mean_c = facing_surfel()
    colors, alphas, normals, surf_normals, distort, median, meta = rasterization_2dgs(
        **scene, render_mode="RGB+ED", backend=backend
    )
    covered = alphas[0, ..., 0] > 0
    assert covered.sum() > 100
    # The depth of every covered pixel is the plane's, exactly; the median depth too (a single surfel).
    assert torch.allclose(
        colors[0, ..., 3][covered], torch.full_like(colors[0, ..., 3][covered], 2.0), atol=1e-12
    )
    assert torch.allclose(
        median[0, ..., 0][covered], torch.full_like(median[0, ..., 0][covered], 2.0), atol=1e-12
    )
    # Normal: the view axis turned towards the camera, in world space, weighted by alpha.
    towards_camera = rotation @ torch.tensor([0.0, 0.0, -1.0], dtype=F64)
    unit = normals[0][covered] / alphas[0][covered]
    assert torch.allclose(unit, towards_camera.expand_as(unit), atol=1e-12)
    # The normals of the rendered depth agree inside the footprint (away from its edge).
    inside = covered.clone()
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        inside &= torch.roll(covered, shifts=(dy, dx), dims=(0, 1))
    inside[0], inside[-1], inside[:, 0], inside[:, -1] = False, False, False, False
    assert inside.sum() > 50
    assert torch.allclose(surf_normals[inside], towards_camera.expand_as(surf_normals[inside]), atol=1e-9)
    # The kernel: each pixel ray meets the plane at (a, b) (in scales) and alpha = o exp(-min(a^2 + b^2,
    # 2 |d|^2) / 2), d the pixel's distance to the projected centre.
    K = scene["Ks"][0]
    ys, xs = torch.meshgrid(
        torch.arange(24, dtype=F64) + 0.5, torch.arange(32, dtype=F64) + 0.5, indexing="ij"
    )
    a = ((xs - K[0, 2]) / K[0, 0] * 2.0 - mean_c[0]) / 0.4
    b = ((ys - K[1, 2]) / K[1, 1] * 2.0 - mean_c[1]) / 0.3
    cx, cy = K[0, 0] * mean_c[0] / 2.0 + K[0, 2], K[1, 1] * mean_c[1] / 2.0 + K[1, 2]
    assert torch.allclose(meta["means2d"][0, 0], torch.stack([cx, cy]), atol=1e-12)
    screen = 2.0 * ((xs - cx) ** 2 + (ys - cy) ** 2)
    expected = 0.8 * torch.exp(-0.5 * torch.minimum(a * a + b * b, screen))
    expected = torch.where(expected >= 1 / 255, expected, 0.0)
    footprint = meta["radii"][0, 0]
    within = ((xs - cx).abs() < footprint[0] + 16) & ((ys - cy).abs() < footprint[1] + 16)
    assert torch.allclose(alphas[0, ..., 0][within], expected[within], atol=1e-12)
    # A single surfel has no distortion.
    assert distort.abs().max() < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_on_surfel_vanishes_but_for_the_screen_filter(backend):
    """A surfel whose plane contains the camera centre is a line: every pixel ray meets its plane at the
    camera centre (3 units from the surfel's centre: beyond 3 sigma for these sizes), so only the
    screen-space low-pass filter (a one-pixel blob at its centre) is left, whatever its size."""
    K = torch.tensor([[50.0, 0.0, 16.0], [0.0, 50.0, 16.0], [0.0, 0.0, 1.0]], dtype=F64)[None]

    def alpha_of(quat, size):
        out = rasterization_2dgs(
            torch.tensor([[0.0, 0.0, 3.0]], dtype=F64),
            torch.tensor([quat], dtype=F64),
            torch.tensor([[size, size, 0.1]], dtype=F64),
            torch.tensor([0.9], dtype=F64),
            torch.ones(1, 3, dtype=F64),
            torch.eye(4, dtype=F64)[None],
            K,
            32,
            32,
            backend=backend,
        )
        return out[1][0, ..., 0]

    half = math.sqrt(0.5)
    edge_on = [half, 0.0, half, 0.0]  # normal along x: the plane x = 0
    ys, xs = torch.meshgrid(
        torch.arange(32, dtype=F64) + 0.5, torch.arange(32, dtype=F64) + 0.5, indexing="ij"
    )
    blob = 0.9 * torch.exp(-((xs - 16.0) ** 2 + (ys - 16.0) ** 2))
    blob = torch.where(blob >= 1 / 255, blob, 0.0)
    for size in (0.2, 0.5):
        assert torch.allclose(alpha_of(edge_on, size), blob, atol=1e-12)
    # Mutation check: the same surfel turned to face the camera covers far more than the blob.
    assert (alpha_of([1.0, 0.0, 0.0, 0.0], 0.2) > 0).sum() > 2 * (blob > 0).sum()


def test_depth_to_normal_of_a_tilted_plane_is_its_normal():
    """The plane n . X = 1 (world) seen by a rotated camera: the normals of its depth map are -n or n."""
    scene, rotation, _ = facing_surfel()
    viewmat, K = scene["viewmats"][0], scene["Ks"][0]
    camtoworld = torch.linalg.inv(viewmat)
    n_world = torch.tensor([0.2, -0.3, 0.9], dtype=F64)
    n_world = n_world / n_world.norm()
    # In camera space the plane is n_c . X_c = d_c; the ray z (u, v, 1) meets it at z = d_c / (n_c . ray).
    n_c = viewmat[:3, :3] @ n_world
    d_c = 3.0  # the plane's distance from the camera centre
    ys, xs = torch.meshgrid(
        torch.arange(24, dtype=F64) + 0.5, torch.arange(32, dtype=F64) + 0.5, indexing="ij"
    )
    rays = torch.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], torch.ones_like(xs)], dim=-1)
    depth = (d_c / (rays @ n_c))[..., None]
    normals = depth_to_normal(depth, camtoworld, K)
    interior = normals[1:-1, 1:-1]
    sign = torch.sign(interior @ n_world)
    assert torch.allclose(interior * sign[..., None], n_world.expand_as(interior), atol=1e-9)
    assert (normals[0] == 0).all() and (normals[:, -1] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_equals_unpacked(backend):
    scene = random_surfels(sh_degree=1)
    for key in ("means", "quats", "scales", "opacities", "colors"):
        scene[key].requires_grad_()
    unpacked = rasterization_2dgs(**scene, render_mode="RGB+ED", backend=backend)
    grads_unpacked = torch.autograd.grad(
        sum(x.sum() for x in unpacked[:6]), [scene[k] for k in ("means", "quats")]
    )
    packed = rasterization_2dgs(**scene, render_mode="RGB+ED", packed=True, backend=backend)
    grads_packed = torch.autograd.grad(
        sum(x.sum() for x in packed[:6]), [scene[k] for k in ("means", "quats")]
    )
    for a, b in zip(unpacked[:6], packed[:6]):
        assert torch.allclose(a, b, atol=1e-10)
    for a, b in zip(grads_unpacked, grads_packed):
        assert torch.allclose(a, b, atol=1e-9)
    meta = packed[6]
    visible = (unpacked[6]["radii"] > 0).all(-1)
    assert meta["means2d"].shape == (int(visible.sum()), 2)
    assert torch.equal(visible.nonzero()[:, 0], meta["camera_ids"])
    assert torch.equal(visible.nonzero()[:, 1], meta["gaussian_ids"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_distortion_and_median_of_two_stacked_surfels(backend):
    """Two large surfels facing the camera at depths 2 and 3: each pixel's weights w1, w2 follow from its
    alpha and depth, the distortion is 2 w1 w2 |3 - 2| and, near the centre (T drops below 0.5 after the
    front one), the median is the front depth."""
    scene, _, mean_c = facing_surfel()
    behind, rotation, _ = facing_surfel(depth=3.0, offset=(0.15, -0.075))
    both = {k: torch.cat([scene[k], behind[k]]) for k in ("means", "quats", "scales", "opacities", "colors")}
    both["scales"] = torch.tensor([[4.0, 4.0, 1e-3], [6.0, 6.0, 1e-3]], dtype=F64)  # cover the whole image
    both["opacities"] = torch.tensor([0.6, 0.6], dtype=F64)
    out = rasterization_2dgs(
        **both,
        viewmats=scene["viewmats"],
        Ks=scene["Ks"],
        width=32,
        height=24,
        render_mode="RGB+D",
        distloss=True,
        backend=backend,
    )
    centre = (slice(None), slice(10, 14), slice(14, 18))
    _, alphas, _, _, distort, median, meta = out
    assert torch.allclose(median[centre], torch.full_like(median[centre], 2.0), atol=1e-12)
    rendered_depth = out[0][..., 3]
    # With weights w1, w2: depth = 2 w1 + 3 w2, alpha = w1 + w2 -> w2 = depth - 2 alpha, w1 = 3 alpha - depth.
    w2 = rendered_depth - 2 * alphas[..., 0]
    w1 = 3 * alphas[..., 0] - rendered_depth
    assert (w1[centre] > 0.5).all() and (w2[centre] > 0.1).all()
    assert torch.allclose(distort[..., 0], 2 * w1 * w2 * 1.0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments_name_the_argument(backend):
    scene = random_surfels(dtype=torch.float32)
    with pytest.raises(ValueError, match="distloss"):
        rasterization_2dgs(**scene, distloss=True, backend=backend)
    with pytest.raises(ValueError, match="depth_mode"):
        rasterization_2dgs(**scene, depth_mode="mean", backend=backend)
    with pytest.raises(ValueError, match="quats"):
        rasterization_2dgs(**{**scene, "quats": scene["quats"][:, :3]}, backend=backend)
    singular = scene["viewmats"].clone()
    singular[1, 2] = 0.0
    with pytest.raises(ValueError, match="viewmats: camera 1 has a singular"):
        rasterization_2dgs(**{**scene, "viewmats": singular}, backend=backend)
    with pytest.raises(NotImplementedError, match="sparse_grad"):
        rasterization_2dgs(**scene, packed=True, sparse_grad=True, backend=backend)


def test_reference_projection_culls_behind_and_degenerate():
    scene = random_surfels(n=4, n_cameras=1)
    means = scene["means"].clone()
    means[0] = torch.tensor([0.0, 0.0, -10.0], dtype=F64)  # behind camera 0 (at z = -3 looking at +z)
    radii, means2d, depths, transforms, normals = ref2d.project_gaussians_2dgs(
        means, scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], 37, 29
    )
    assert (radii[0, 0] == 0).all() and (means2d[0, 0] == 0).all() and (transforms[0, 0] == 0).all()
    visible = (radii[0] > 0).all(-1)
    assert visible[1:].any()
    # Visible normals are unit and face the camera (negative dot product with the camera-space centre).
    assert torch.allclose(normals[0][visible].norm(dim=-1), torch.ones(int(visible.sum()), dtype=F64))


# ---- the compiled ops: gradcheck (float64, tiny scenes) and against the reference --------------------------


@pytest.fixture
def one_thread():
    """gradcheck makes thousands of calls on tiny inputs: one thread, so a busy machine cannot stall them at a
    barrier (the results do not depend on the thread count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_surfels(n: int = 5, seed: int = 3):
    """A few surfels 3-4 units in front of two cameras, turned at most ~50 degrees away from them."""
    g = torch.Generator().manual_seed(seed)
    means = torch.cat(
        [
            (torch.rand(n, 2, generator=g, dtype=F64) - 0.5) * 1.0,
            3.0 + torch.rand(n, 1, generator=g, dtype=F64),
        ],
        -1,
    )
    axis_angle = (torch.rand(n, 3, generator=g, dtype=F64) - 0.5) * 1.6
    half = axis_angle.norm(dim=-1, keepdim=True) / 2
    quats = torch.cat([torch.cos(half), torch.sin(half) * axis_angle / (2 * half)], -1) * 1.3
    scales = 0.15 + 0.2 * torch.rand(n, 3, generator=g, dtype=F64)
    viewmats = torch.eye(4, dtype=F64)[None].repeat(2, 1, 1)
    angle = 0.12
    viewmats[1, :3, :3] = torch.tensor(
        [[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0], [-math.sin(angle), 0.0, math.cos(angle)]],
        dtype=F64,
    )
    viewmats[1, :3, 3] = torch.tensor([0.1, -0.05, 0.2], dtype=F64)
    Ks = torch.tensor(
        [[[30.0, 0, 10.5], [0, 32.0, 8.0], [0, 0, 1]], [[28.0, 0, 9.5], [0, 30.0, 8.5], [0, 0, 1]]]
    )
    return means, quats, scales, viewmats, Ks.to(F64)


@needs_cpp
def test_gradcheck_project_surfels(one_thread):
    from gsplat_py.rendering import ops_2dgs

    inputs = [t.clone().requires_grad_(True) for t in tiny_surfels()]

    def fn(means, quats, scales, viewmats, Ks):
        radii, means2d, depths, transforms, normals = ops_2dgs.project_gaussians_2dgs(
            means, quats, scales, viewmats, Ks, 21, 16
        )
        assert (radii > 0).all(), "every surfel must stay visible in every camera"
        return means2d, depths, transforms, normals

    assert torch.autograd.gradcheck(fn, inputs)


def surfel_kernel_field(means2d, transforms, opacities, width, height):
    """Per surfel and pixel centre: the unclamped alpha, and the surface and screen terms of its sigma."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=F64) + 0.5, torch.arange(width, dtype=F64) + 0.5, indexing="ij"
    )
    Tu, Tv, Tw = (transforms[..., k, None, None, :] for k in range(3))
    cross = torch.linalg.cross(xs[..., None] * Tw - Tu, ys[..., None] * Tw - Tv)
    surface = (cross[..., 0] ** 2 + cross[..., 1] ** 2) / cross[..., 2] ** 2
    screen = 2 * ((means2d[..., 0, None, None] - xs) ** 2 + (means2d[..., 1, None, None] - ys) ** 2)
    alpha = opacities[..., None, None] * torch.exp(-0.5 * torch.minimum(surface, screen))
    return alpha, surface, screen


@needs_cpp
def test_gradcheck_rasterize_surfels(one_thread):
    from gsplat_py.rendering import ops_2dgs
    from gsplat_py.rendering import reference as ref

    W, H, tile_size = 21, 16, 8
    means, quats, scales, viewmats, Ks = tiny_surfels(seed=15)
    radii, means2d, depths, transforms, normals = ref2d.project_gaussians_2dgs(
        means, quats, scales, viewmats, Ks, W, H
    )
    g = torch.Generator().manual_seed(5)
    opacities = 0.3 + 0.3 * torch.rand(2, 5, generator=g, dtype=F64)
    colors = torch.rand(2, 5, 3, generator=g, dtype=F64)
    # Away from the kinks: the 1/255 threshold, the switch between the surface and screen terms, the cap.
    alpha, surface, screen = surfel_kernel_field(means2d, transforms, opacities, W, H)
    assert ((alpha - 1 / 255).abs() > 1e-3 / 255).all() and alpha.max() < 0.99
    assert ((surface - screen).abs() > 1e-5 * screen).all()
    tw, th = math.ceil(W / tile_size), math.ceil(H / tile_size)
    _, offsets, ids, _ = ref.bin_gaussians_to_tiles(means2d, radii, depths, tile_size, tw, th)
    assert ids.numel() > 2 * 5
    inputs = [
        t.clone().requires_grad_(True) for t in (means2d, transforms, colors, opacities, normals, depths)
    ]

    def fn(*args):
        return ops_2dgs.rasterize_to_pixels_2dgs(*args, W, H, tile_size, offsets, ids)

    assert torch.autograd.gradcheck(fn, inputs)


SCENE_INPUTS = ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")


def render_and_gradients(scene, backend, seed=1, **options):
    """Outputs and the gradients of every scene input (and the backgrounds) for a random weighting of every
    output."""
    inputs = {
        k: v.detach().clone().requires_grad_(True) if k in SCENE_INPUTS else v for k, v in scene.items()
    }
    backgrounds = options.pop("backgrounds", None)
    if backgrounds is not None:
        backgrounds = backgrounds.clone().requires_grad_(True)
    out = rasterization_2dgs(**inputs, backgrounds=backgrounds, backend=backend, **options)
    g = torch.Generator().manual_seed(seed)
    outputs = [x for x in out[:6] if x is not None]
    # surf_normals (plain PyTorch on the rendered depth, the same code for both backends) stay out of the
    # loss: normalising differences of nearby depths amplifies rounding a millionfold.
    weighted = [x for k, x in enumerate(out[:6]) if x is not None and k != 3]
    loss = sum((x * torch.rand(x.shape, generator=g, dtype=x.dtype).to(x.device)).sum() for x in weighted)
    wanted = [inputs[k] for k in SCENE_INPUTS] + ([backgrounds] if backgrounds is not None else [])
    grads = torch.autograd.grad(loss, wanted, allow_unused=True)
    return outputs, grads, out[6]


@needs_cpp
@pytest.mark.parametrize(
    "options",
    [
        dict(render_mode="RGB"),
        dict(render_mode="RGB+D", sh_degree=2, packed=True),
        dict(render_mode="RGB+ED", distloss=True, background=True),
        dict(render_mode="ED", depth_mode="median"),
        dict(render_mode="RGB+ED", depth_mode="median", sh_degree=1, background=True),
    ],
    ids=str,
)
def test_compiled_matches_reference_forward_and_gradients(options):
    options = dict(options)
    scene = random_surfels(n=80, sh_degree=options.pop("sh_degree", None))
    if options.pop("background", False):
        options["backgrounds"] = torch.rand(2, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    out_cpp, grads_cpp, meta_cpp = render_and_gradients(scene, "cpp", **dict(options))
    out_ref, grads_ref, meta_ref = render_and_gradients(scene, "reference", **dict(options))
    assert meta_cpp["backend"] == "cpp" and meta_ref["backend"] == "reference"
    for key in ("radii", "flatten_ids", "isect_offsets"):
        assert torch.equal(meta_cpp[key], meta_ref[key]), key
    for key in ("means2d", "depths", "ray_transforms", "normals"):
        assert torch.allclose(meta_cpp[key], meta_ref[key], rtol=1e-12, atol=1e-12), key
    for a, b in zip(out_cpp, out_ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
    for name, a, b in zip(SCENE_INPUTS + ("backgrounds",), grads_cpp, grads_ref):
        if b is None:
            assert a is None, name
            continue
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-8 * float(b.abs().max())), name
        assert b.abs().max() > 0, name  # every input gets a gradient


@needs_cpp
def test_compiled_matches_reference_in_float32_with_absgrad():
    scene = random_surfels(n=150, dtype=torch.float32, seed=2)
    results = {}
    for backend in ("cpp", "reference"):
        means = scene["means"].clone().requires_grad_(True)
        out = rasterization_2dgs(
            **{**scene, "means": means}, render_mode="RGB+D", absgrad=True, backend=backend
        )
        (out[0].sum() + out[2].sum() + out[4].sum()).backward()
        results[backend] = out, means.grad, out[6]["means2d"].absgrad, out[6]["gradient_2dgs"].grad
    (out_cpp, g_cpp, abs_cpp, dens_cpp), (out_ref, g_ref, abs_ref, dens_ref) = (
        results["cpp"],
        results["reference"],
    )
    for k in (0, 1, 2, 4, 5):
        assert torch.allclose(out_cpp[k], out_ref[k], rtol=1e-4, atol=1e-4), k
    assert torch.allclose(g_cpp, g_ref, rtol=1e-3, atol=1e-3 * float(g_ref.abs().max()))
    assert torch.allclose(abs_cpp, abs_ref, rtol=1e-3, atol=1e-3 * float(abs_ref.abs().max()))
    assert abs_ref.abs().max() > 0
    assert torch.allclose(dens_cpp, dens_ref, rtol=1e-3, atol=1e-3 * float(dens_ref.abs().max()))
    assert dens_ref.abs().max() > 0


@needs_cpp
def test_compiled_gradients_do_not_depend_on_the_thread_count():
    scene = random_surfels(n=120, dtype=torch.float32, seed=5)
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(render_and_gradients(scene, "cpp", render_mode="RGB+ED", distloss=True)[1])
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.skipif(not _backend.cuda_backend_available(), reason="needs a GPU and the CUDA kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    scene = random_surfels(n=150, dtype=dtype, seed=6, sh_degree=1)
    options = dict(render_mode="RGB+ED", distloss=True, absgrad=True)
    on_cpu = render_and_gradients(scene, "cpp", **options)
    on_gpu = render_and_gradients(
        {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in scene.items()}, "cpp", **options
    )
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    for key in ("radii", "flatten_ids", "isect_offsets"):
        assert torch.equal(on_cpu[2][key], on_gpu[2][key].cpu()), key
    assert len(on_cpu[0]) == 6  # colors, alphas, render_normals, surf_normals, render_distort, render_median
    outputs = list(zip(on_cpu[0], on_gpu[0]))
    if dtype == torch.float32:
        # surf_normals (plain PyTorch on the rendered depth, the same code on both devices) normalise
        # differences of neighbouring depths, which turns the depth's float32 rounding (the depth channel of
        # the colours is compared within 1e-4) into larger differences; float64 compares them.
        del outputs[3]
    for a, b in outputs + list(zip(on_cpu[1], on_gpu[1])):
        scale = float(a.abs().max()) if a.numel() else 1.0
        assert torch.allclose(a, b.cpu(), rtol=tolerance, atol=tolerance * scale)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [0, 5])
def test_nothing_visible_renders_the_background_with_zero_gradients(backend, n):
    scene = random_surfels(n=5, n_cameras=1)
    scene = {k: v[:n] if k in SCENE_INPUTS[:5] else v for k, v in scene.items()}
    scene["means"] = scene["means"] + torch.tensor([0.0, 0.0, -100.0], dtype=F64)  # behind the camera
    backgrounds = torch.tensor([[0.2, 0.4, 0.6]], dtype=F64)
    outputs, grads, meta = render_and_gradients(
        scene, backend, render_mode="RGB+D", backgrounds=backgrounds, distloss=True
    )
    assert meta["n_isects"] == 0
    assert torch.equal(outputs[0][..., :3], backgrounds.expand(1, 29, 37, 3))
    for x in outputs[1:]:
        assert not x.any()
    *scene_grads, background_grad = grads
    for grad in scene_grads:
        assert grad is not None and not grad.any()
    assert background_grad.all()  # the background shows everywhere
