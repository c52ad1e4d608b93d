"""Tests of the public ``gsplat_py.rasterization`` API (input validation, modes, edge cases, gradients).

Every test takes the ``backend`` fixture, so the same checks run on the plain-PyTorch reference and, once
the extension is built, on the compiled ops.
"""

import math
import sys

import pytest
import torch
from conftest import rasterization_unpacked as rasterization  # these tests read the [C, N] meta

from gsplat_py.rendering import _backend

SH_C0 = 0.28209479177387814


def _cpp_available() -> bool:
    return _backend.extension_available()


@pytest.fixture(params=["reference", "cpp"])
def backend(request):
    if request.param == "cpp" and not _cpp_available():
        pytest.skip("compiled extension gsplat_py._C not available")
    return request.param


# ------------------------------------------------------------------------------------------------
# Scene helpers
# ------------------------------------------------------------------------------------------------

W = H = 31  # odd, so that with cx = cy = 15.5 the principal point is the centre of pixel (15, 15)
FOCAL = 50.0


def make_K(C=1, dtype=torch.float32, f=FOCAL, w=W, h=H):
    K = torch.tensor([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    return K.expand(C, 3, 3).clone()


def make_viewmats(C=1, dtype=torch.float32):
    return torch.eye(4, dtype=dtype).expand(C, 4, 4).clone()


def rot_y(angle, dtype=torch.float32):
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1]], dtype=dtype)


def single_gaussian(depth=5.0, scale=0.1, opacity=0.9, color=(0.2, 0.5, 0.8), dtype=torch.float32):
    """One isotropic Gaussian on the optical axis, i.e. centred on pixel (15, 15) of the identity camera."""
    return dict(
        means=torch.tensor([[0.0, 0.0, depth]], dtype=dtype),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype),
        scales=torch.full((1, 3), scale, dtype=dtype),
        opacities=torch.tensor([opacity], dtype=dtype),
        colors=torch.tensor([color], dtype=dtype),
        viewmats=make_viewmats(1, dtype),
        Ks=make_K(1, dtype),
        width=W,
        height=H,
    )


def random_scene(N=20, C=1, D=3, seed=0, dtype=torch.float32):
    """N anisotropic, rotated Gaussians in front of C cameras (identity and small rotations about y)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.cat(
        [(torch.rand(N, 2, generator=g) - 0.5) * 2.0, 4.0 + 2.0 * torch.rand(N, 1, generator=g)], dim=1
    )
    viewmats = torch.stack([rot_y(0.05 * i) for i in range(C)])
    viewmats[:, :3, 3] = torch.arange(C, dtype=torch.float32)[:, None] * torch.tensor([0.1, -0.1, 0.3])
    return dict(
        means=means.to(dtype),
        quats=torch.randn(N, 4, generator=g).to(dtype),
        scales=(0.05 + 0.15 * torch.rand(N, 3, generator=g)).to(dtype),
        opacities=(0.3 + 0.6 * torch.rand(N, generator=g)).to(dtype),
        colors=torch.rand(N, D, generator=g).to(dtype),
        viewmats=viewmats.to(dtype),
        Ks=make_K(C, dtype),
        width=W,
        height=H,
    )


def render(scene, **kwargs):
    return rasterization(**{**scene, **kwargs})


# ------------------------------------------------------------------------------------------------
# Input validation
# ------------------------------------------------------------------------------------------------

N0 = 20  # Gaussians in random_scene()


def _replace(name, fn):
    return lambda s: {**s, name: fn(s[name])}


BAD_INPUTS = [
    # (id, scene transform, argument named in the message, extra substrings expected in the message)
    ("means_shape", _replace("means", lambda t: t[:, :2]), "means", ["[N, 3]", f"[{N0}, 2]"]),
    ("means_not_tensor", _replace("means", lambda t: t.tolist()), "means", ["torch.Tensor"]),
    (
        "quats_shape",
        _replace("quats", lambda t: t[:, :3]),
        "quats",
        ["[N, 4]", f"N={N0} (from means)", f"[{N0}, 3]"],
    ),
    ("scales_N", _replace("scales", lambda t: t[:-1]), "scales", ["[N, 3]", f"N={N0}", f"[{N0 - 1}, 3]"]),
    ("opacities_2d", _replace("opacities", lambda t: t[:, None]), "opacities", ["[N]", f"[{N0}, 1]"]),
    ("colors_N", _replace("colors", lambda t: t[:-2]), "colors", ["[N, D]", f"N={N0}", f"[{N0 - 2}, 3]"]),
    (
        "colors_C",
        _replace("colors", lambda t: t.expand(2, N0, 3)),
        "colors",
        ["[C, N, D]", "C=1 (from viewmats)"],
    ),
    ("colors_1d", _replace("colors", lambda t: t[:, 0]), "colors", ["[N, D]", f"[{N0}]"]),
    ("viewmats_shape", _replace("viewmats", lambda t: t[:, :3]), "viewmats", ["[C, 4, 4]", "[1, 3, 4]"]),
    ("viewmats_2d", _replace("viewmats", lambda t: t[0]), "viewmats", ["[C, 4, 4]", "[4, 4]"]),
    ("Ks_shape", _replace("Ks", lambda t: torch.eye(4).expand(1, 4, 4)), "Ks", ["[C, 3, 3]", "[1, 4, 4]"]),
    ("Ks_C", _replace("Ks", lambda t: t.expand(2, 3, 3)), "Ks", ["C=1 (from viewmats)", "[2, 3, 3]"]),
    (
        "no_cameras",
        lambda s: {**s, "viewmats": s["viewmats"][:0], "Ks": s["Ks"][:0]},
        "viewmats",
        ["[0, 4, 4]"],
    ),
    (
        "backgrounds_D",
        lambda s: {**s, "backgrounds": torch.zeros(1, 4)},
        "backgrounds",
        ["[C, D]", "D=3", "[1, 4]"],
    ),
    ("backgrounds_C", lambda s: {**s, "backgrounds": torch.zeros(2, 3)}, "backgrounds", ["C=1", "[2, 3]"]),
    (
        "backgrounds_D_mode",
        lambda s: {**s, "backgrounds": torch.zeros(2, 3), "render_mode": "D"},
        "backgrounds",
        ["C=1", "[2, 3]"],
    ),
    ("quats_int", _replace("quats", lambda t: t.round().long()), "quats", ["floating", "torch.int64"]),
    (
        "means_half_with_float64",
        lambda s: {**s, "means": s["means"].half(), "quats": s["quats"].double()},
        "quats",
        ["torch.float32 (from means", "torch.float64"],
    ),
    (
        "scales_float64",
        _replace("scales", lambda t: t.double()),
        "scales",
        ["torch.float32", "torch.float64"],
    ),
    ("Ks_meta_device", _replace("Ks", lambda t: t.to("meta")), "Ks", ["device", "cpu", "meta"]),
    (
        "backgrounds_meta_device",
        lambda s: {**s, "backgrounds": torch.zeros(1, 3, device="meta")},
        "backgrounds",
        ["device"],
    ),
    (
        "means_nan",
        _replace("means", lambda t: t.index_put((torch.tensor([3]),), torch.tensor(float("nan")))),
        "means",
        ["finite", "3 non-finite"],
    ),
    (
        "quats_inf",
        _replace("quats", lambda t: t.index_put((torch.tensor([0]),), torch.tensor(float("inf")))),
        "quats",
        ["finite"],
    ),
    (
        "scales_inf",
        _replace("scales", lambda t: t.index_put((torch.tensor([1]),), torch.tensor(-float("inf")))),
        "scales",
        ["finite"],
    ),
    (
        "opacities_nan",
        _replace("opacities", lambda t: t.index_put((torch.tensor([5]),), torch.tensor(float("nan")))),
        "opacities",
        ["finite"],
    ),
    (
        "colors_nan",
        _replace("colors", lambda t: t.index_put((torch.tensor([2]),), torch.tensor(float("nan")))),
        "colors",
        ["finite"],
    ),
    (
        "viewmats_nan",
        _replace("viewmats", lambda t: t.index_put((torch.tensor([0]),), torch.tensor(float("nan")))),
        "viewmats",
        ["finite"],
    ),
    (
        "Ks_inf",
        _replace("Ks", lambda t: t.index_put((torch.tensor([0]),), torch.tensor(float("inf")))),
        "Ks",
        ["finite"],
    ),
    (
        "backgrounds_nan",
        lambda s: {**s, "backgrounds": torch.full((1, 3), float("nan"))},
        "backgrounds",
        ["finite"],
    ),
    ("width_zero", lambda s: {**s, "width": 0}, "width", ["got 0"]),
    ("height_negative", lambda s: {**s, "height": -4}, "height", ["got -4"]),
    ("width_float", lambda s: {**s, "width": 31.5}, "width", ["int", "31.5"]),
    ("height_str", lambda s: {**s, "height": "31"}, "height", ["int"]),
    ("width_bool", lambda s: {**s, "width": True}, "width", ["int"]),
    ("tile_size_zero", lambda s: {**s, "tile_size": 0}, "tile_size", ["got 0"]),
    ("tile_size_negative", lambda s: {**s, "tile_size": -16}, "tile_size", ["got -16"]),
    ("tile_size_too_large", lambda s: {**s, "tile_size": 128}, "tile_size", ["1..64", "got 128"]),
    ("tile_size_float", lambda s: {**s, "tile_size": 16.0}, "tile_size", ["int"]),
    (
        "sh_degree_5",
        lambda s: {**s, "sh_degree": 5, "colors": torch.zeros(N0, 36, 3)},
        "sh_degree",
        ["0..4", "5"],
    ),
    (
        "sh_degree_negative",
        lambda s: {**s, "sh_degree": -1, "colors": torch.zeros(N0, 1, 3)},
        "sh_degree",
        ["0..4"],
    ),
    (
        "sh_K_too_small",
        lambda s: {**s, "sh_degree": 2, "colors": torch.zeros(N0, 4, 3)},
        "colors",
        ["[N, K, 3]", "K >= 9", "sh_degree=2", f"[{N0}, 4, 3]"],
    ),
    (
        "sh_last_dim",
        lambda s: {**s, "sh_degree": 1, "colors": torch.zeros(N0, 4, 4)},
        "colors",
        ["[N, K, 3]"],
    ),
    (
        "sh_per_camera_C",
        lambda s: {**s, "sh_degree": 0, "colors": torch.zeros(2, N0, 1, 3)},
        "colors",
        ["[C, N, K, 3]", "C=1"],
    ),
    ("render_mode", lambda s: {**s, "render_mode": "RGBD"}, "render_mode", ["'RGB+D'"]),
    ("rasterize_mode", lambda s: {**s, "rasterize_mode": "mip"}, "rasterize_mode", ["'antialiased'"]),
    ("backend_name", lambda s: {**s, "backend": "cuda"}, "backend", ["'reference'"]),
    ("near_plane_nan", lambda s: {**s, "near_plane": float("nan")}, "near_plane", ["finite"]),
]


@pytest.mark.parametrize(
    "transform,arg,fragments", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_inputs_raise_value_error(backend, transform, arg, fragments):
    scene = transform(random_scene(N=N0))
    with pytest.raises(ValueError) as excinfo:
        rasterization(**scene, backend=backend) if "backend" not in scene else rasterization(**scene)
    message = str(excinfo.value)
    assert message.startswith(f"{arg}:"), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_bad_shape_message_is_exact(backend):
    scene = random_scene(N=100)
    scene["quats"] = scene["quats"][:, :3]
    with pytest.raises(ValueError) as excinfo:
        render(scene, backend=backend)
    assert str(excinfo.value) == (
        "quats: expected shape [N, 4] with N=100 (from means) (or pass covars), got [100, 3]"
    )


@pytest.mark.parametrize("camera_model", ["ftheta", "equirect"])
def test_unsupported_camera_model(backend, camera_model):
    with pytest.raises(NotImplementedError) as excinfo:
        render(random_scene(), camera_model=camera_model, backend=backend)
    message = str(excinfo.value)
    assert camera_model in message and "'pinhole'" in message and "'ortho'" in message
    if camera_model == "ftheta":
        assert "not implemented yet" in message


# ------------------------------------------------------------------------------------------------
# Backend selection (does not depend on the fixture)
# ------------------------------------------------------------------------------------------------


def _extension_unavailable(monkeypatch):
    monkeypatch.setattr(_backend, "extension_available", lambda: False)


def test_cpp_backend_unavailable_raises_with_build_hint(monkeypatch):
    _extension_unavailable(monkeypatch)
    with pytest.raises(RuntimeError) as excinfo:
        render(random_scene(), backend="cpp")
    assert "pip install --no-build-isolation" in str(excinfo.value)


def test_auto_falls_back_to_reference(monkeypatch):
    _extension_unavailable(monkeypatch)
    _, _, meta = render(random_scene(), backend="auto")
    assert meta["backend"] == "reference"


def test_auto_falls_back_when_the_extension_does_not_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "gsplat_py._C", None)  # makes the import raise ImportError
    monkeypatch.setattr(_backend, "_state", _backend._LoadState())
    with pytest.warns(RuntimeWarning, match="pure-PyTorch reference"):
        _, _, meta = render(random_scene(), backend="auto")
    assert meta["backend"] == "reference"
    with pytest.raises(RuntimeError, match="pip install --no-build-isolation"):
        render(random_scene(), backend="cpp")


def test_meta_reports_backend(backend):
    _, _, meta = render(random_scene(), backend=backend)
    assert meta["backend"] == backend


# ------------------------------------------------------------------------------------------------
# Empty / fully culled scenes
# ------------------------------------------------------------------------------------------------


def _requires_grad(scene):
    for key in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks", "backgrounds"):
        if key in scene and scene[key] is not None:
            scene[key] = scene[key].clone().requires_grad_(True)
    return scene


@pytest.mark.parametrize("with_background", [True, False])
@pytest.mark.parametrize("render_mode", ["RGB", "RGB+D", "D"])
def test_zero_gaussians_render_background(backend, with_background, render_mode):
    C = 2
    scene = random_scene(N=0, C=C, dtype=torch.float64)
    bg_channels = 1 if render_mode == "D" else 3
    if with_background:
        scene["backgrounds"] = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=torch.float64)[
            :, :bg_channels
        ]
    scene = _requires_grad(scene)
    colors, alphas, meta = render(scene, render_mode=render_mode, backend=backend, absgrad=True)

    D = {"RGB": 3, "RGB+D": 4, "D": 1}[render_mode]
    assert colors.shape == (C, H, W, D) and alphas.shape == (C, H, W, 1)
    expected = torch.zeros(C, D, dtype=torch.float64)
    if with_background and render_mode != "D":  # depth renders on a zero background, as gsplat
        expected[:, :bg_channels] = scene["backgrounds"].detach()
    assert torch.equal(colors.detach(), expected[:, None, None, :].expand(C, H, W, D))
    assert torch.equal(alphas.detach(), torch.zeros(C, H, W, 1, dtype=torch.float64))
    assert meta["n_isects"] == 0 and meta["radii"].shape == (C, 0, 2)

    (colors.sum() + alphas.sum()).backward()
    for key in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks"):
        grad = scene[key].grad
        assert grad is not None and grad.shape == scene[key].shape, key
        assert torch.equal(grad, torch.zeros_like(grad)), key
    if with_background and render_mode != "D":
        # every pixel shows the background with weight T = 1
        assert torch.allclose(
            scene["backgrounds"].grad, torch.full((C, bg_channels), float(H * W), dtype=torch.float64)
        )
    assert meta["means2d"].absgrad.shape == (C, 0, 2)


@pytest.mark.parametrize("where", ["behind", "beyond_far"])
def test_all_culled_renders_background(backend, where):
    C = 2
    scene = random_scene(N=10, C=C, dtype=torch.float64)
    far_plane = 1e10
    if where == "behind":
        scene["means"] = scene["means"] * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    else:
        far_plane = 1.0
    scene["backgrounds"] = torch.tensor([[0.1, 0.2, 0.3], [0.7, 0.8, 0.9]], dtype=torch.float64)
    scene = _requires_grad(scene)
    colors, alphas, meta = render(scene, far_plane=far_plane, backend=backend, absgrad=True)

    assert torch.equal(meta["radii"], torch.zeros(C, 10, 2, dtype=torch.int32))
    assert meta["n_isects"] == 0
    assert torch.equal(colors.detach(), scene["backgrounds"].detach()[:, None, None, :].expand(C, H, W, 3))
    assert torch.equal(alphas.detach(), torch.zeros(C, H, W, 1, dtype=torch.float64))

    colors.sum().backward()
    for key in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks"):
        grad = scene[key].grad
        assert grad is not None and torch.equal(grad, torch.zeros_like(grad)), key
    assert torch.allclose(scene["backgrounds"].grad, torch.full((C, 3), float(H * W), dtype=torch.float64))
    assert torch.equal(meta["means2d"].grad, torch.zeros(C, 10, 2, dtype=torch.float64))
    assert torch.equal(meta["means2d"].absgrad, torch.zeros(C, 10, 2, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------


def test_non_contiguous_inputs_match_contiguous(backend):
    C, N = 2, 30
    scene = random_scene(N=N, C=C, D=3)
    scene["colors"] = torch.rand(C, N, 3, generator=torch.Generator().manual_seed(1))
    scene["backgrounds"] = torch.tensor([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    ref_colors, ref_alphas, _ = render(scene, backend=backend)

    def strided(t):
        """Same values, non-contiguous layout (every other element of a twice-as-wide buffer)."""
        buf = torch.zeros(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype)
        buf[..., ::2] = t
        out = buf[..., ::2]
        assert not out.is_contiguous()
        return out

    nc = {k: strided(v) if isinstance(v, torch.Tensor) else v for k, v in scene.items()}
    nc["viewmats"] = scene["viewmats"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not nc["viewmats"].is_contiguous()
    colors, alphas, _ = render(nc, backend=backend)
    assert torch.equal(colors, ref_colors)
    assert torch.equal(alphas, ref_alphas)
    assert ref_alphas.max() > 0.5  # the scene is actually visible


# ------------------------------------------------------------------------------------------------
# Render modes
# ------------------------------------------------------------------------------------------------

CENTRE = (15, 15)  # (row, col) of the pixel whose centre is the principal point


def test_rgb_single_gaussian_centre_pixel(backend):
    scene = single_gaussian(dtype=torch.float64)
    colors, alphas, meta = render(scene, backend=backend)
    i, j = CENTRE
    # sigma = 0 at the centre, so alpha = opacity and the colour is opacity * colour
    assert alphas[0, i, j, 0].item() == pytest.approx(0.9, abs=1e-12)
    assert torch.allclose(
        colors[0, i, j], 0.9 * torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64), atol=1e-12
    )
    assert meta["depths"][0, 0].item() == pytest.approx(5.0)
    assert meta["means2d"][0, 0].tolist() == pytest.approx([15.5, 15.5])
    assert meta["width"] == W and meta["height"] == H and meta["n_cameras"] == 1
    assert meta["tile_width"] == 2 and meta["tile_height"] == 2 and meta["tile_size"] == 16
    assert isinstance(meta["n_isects"], int) and meta["n_isects"] == int(meta["tiles_per_gauss"].sum())
    assert meta["opacities"].shape == (1, 1) and meta["compensations"] is None


def test_rgb_plus_depth_channel(backend):
    depth, opacity = 5.0, 0.9
    scene = single_gaussian(depth=depth, opacity=opacity, dtype=torch.float64)
    scene["backgrounds"] = torch.tensor([[0.25, 0.5, 0.75]], dtype=torch.float64)
    colors, alphas, meta = render(scene, render_mode="RGB+D", backend=backend)
    assert colors.shape == (1, H, W, 4)
    i, j = CENTRE
    weight = alphas[0, i, j, 0].item()
    assert weight == pytest.approx(opacity, abs=1e-12)
    assert colors[0, i, j, 3].item() == pytest.approx(depth * weight, abs=1e-10)  # 4.5
    # a far corner is not covered: background colour and a zero depth background
    assert colors[0, 0, 0].tolist() == pytest.approx([0.25, 0.5, 0.75, 0.0])
    # the depth channel equals sum_i w_i z_i everywhere = alpha * depth for a single Gaussian
    assert torch.allclose(colors[0, ..., 3], alphas[0, ..., 0] * depth, atol=1e-10)


def test_rgb_plus_expected_depth(backend):
    depth = 5.0
    scene = single_gaussian(depth=depth, opacity=0.6, dtype=torch.float64)
    colors, alphas, _ = render(scene, render_mode="RGB+ED", backend=backend)
    i, j = CENTRE
    assert colors[0, i, j, 3].item() == pytest.approx(depth, rel=1e-12)
    covered = alphas[0, ..., 0] > 0
    assert covered.sum() > 1
    assert torch.allclose(
        colors[0, ..., 3][covered], torch.full_like(colors[0, ..., 3][covered], depth), rtol=1e-12
    )
    assert torch.equal(colors[0, ..., 3][~covered], torch.zeros_like(colors[0, ..., 3][~covered]))
    # the colour channels are untouched by the depth normalisation
    rgb, _, _ = render(scene, render_mode="RGB", backend=backend)
    assert torch.equal(colors[..., :3], rgb)


@pytest.mark.parametrize("render_mode", ["D", "ED"])
def test_depth_only_modes(backend, render_mode):
    C = 2
    scene = random_scene(N=15, C=C, dtype=torch.float64)
    colors, alphas, meta = render(scene, render_mode=render_mode, backend=backend)
    assert colors.shape == (C, H, W, 1) and alphas.shape == (C, H, W, 1)
    rgbd, alphas_rgbd, _ = render(scene, render_mode="RGB+" + render_mode, backend=backend)
    assert torch.allclose(colors, rgbd[..., 3:], atol=1e-12)
    assert torch.allclose(alphas, alphas_rgbd, atol=1e-12)
    covered = alphas[..., 0] > 0.05
    depths = colors[..., 0][covered]
    if render_mode == "ED":  # a weighted mean of depths lies within the depth range
        lo, hi = meta["depths"][meta["depths"] > 0].min(), meta["depths"].max()
        assert (depths >= lo - 1e-9).all() and (depths <= hi + 1e-9).all()
    else:
        assert (depths > 0).all()


def test_depth_only_mode_ignores_the_background_as_gsplat(backend):
    scene = single_gaussian(dtype=torch.float64)
    colors, alphas, _ = render(
        scene, render_mode="D", backgrounds=torch.tensor([[2.0]], dtype=torch.float64), backend=backend
    )
    assert colors[0, 0, 0, 0].item() == 0.0  # an uncovered pixel has depth 0 whatever the background
    i, j = CENTRE
    assert colors[0, i, j, 0].item() == pytest.approx(0.9 * 5.0, abs=1e-10)


def test_sh_degree_0_equals_colors(backend):
    scene = random_scene(N=25, C=2, dtype=torch.float64)
    coeffs = torch.randn(25, 1, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    coeffs = coeffs.clamp(-1.5, 1.5)  # keep C0 * coeff + 0.5 > 0 (no clamp at 0 involved)
    sh_colors, sh_alphas, _ = render({**scene, "colors": coeffs}, sh_degree=0, backend=backend)
    rgb_colors, rgb_alphas, _ = render({**scene, "colors": SH_C0 * coeffs[:, 0] + 0.5}, backend=backend)
    assert torch.allclose(sh_colors, rgb_colors, atol=1e-12)
    assert torch.equal(sh_alphas, rgb_alphas)


def test_sh_extra_coefficients_ignored_and_per_camera(backend):
    scene = random_scene(N=25, C=2, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    coeffs = 0.3 * torch.randn(25, 16, 3, generator=g, dtype=torch.float64)
    low, _, _ = render({**scene, "colors": coeffs[:, :4]}, sh_degree=1, backend=backend)
    full, _, _ = render({**scene, "colors": coeffs}, sh_degree=1, backend=backend)
    assert torch.allclose(low, full, atol=1e-12)
    per_cam, _, _ = render({**scene, "colors": coeffs.expand(2, 25, 16, 3)}, sh_degree=1, backend=backend)
    assert torch.allclose(per_cam, full, atol=1e-12)
    # with degree 1 the colour depends on the view direction: not equal to the degree 0 render
    deg0, _, _ = render({**scene, "colors": coeffs}, sh_degree=0, backend=backend)
    assert (deg0 - full).abs().max() > 1e-3


def test_antialiased_lowers_alpha_of_tiny_gaussian(backend):
    # projected std = FOCAL * scale / depth = 0.3 px: compensation = 0.09 / (0.09 + 0.3) ~ 0.23
    scene = single_gaussian(scale=0.03, opacity=0.9, dtype=torch.float64)
    _, alphas_classic, meta_classic = render(scene, rasterize_mode="classic", backend=backend)
    _, alphas_aa, meta_aa = render(scene, rasterize_mode="antialiased", backend=backend)
    comp = meta_aa["compensations"][0, 0].item()
    sigma2 = (FOCAL * 0.03 / 5.0) ** 2
    assert comp == pytest.approx(sigma2 / (sigma2 + 0.3), rel=1e-6)
    assert 0 < comp < 1
    assert meta_classic["compensations"] is None
    assert meta_aa["rasterize_mode"] == "antialiased"
    assert meta_aa["opacities"][0, 0].item() == pytest.approx(0.9 * comp, rel=1e-12)
    i, j = CENTRE
    assert alphas_classic[0, i, j, 0].item() == pytest.approx(0.9, abs=1e-12)
    assert alphas_aa[0, i, j, 0].item() == pytest.approx(0.9 * comp, rel=1e-9)
    assert alphas_aa.sum() < alphas_classic.sum()


def test_batch_of_two_cameras_equals_two_single_calls(backend):
    scene = random_scene(N=30, C=2, dtype=torch.float64)
    scene["backgrounds"] = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]], dtype=torch.float64)
    batch_colors, batch_alphas, meta = render(scene, render_mode="RGB+ED", backend=backend)
    assert meta["n_cameras"] == 2
    for c in range(2):
        single = {
            **scene,
            "viewmats": scene["viewmats"][c : c + 1],
            "Ks": scene["Ks"][c : c + 1],
            "backgrounds": scene["backgrounds"][c : c + 1],
        }
        colors, alphas, meta_c = render(single, render_mode="RGB+ED", backend=backend)
        assert torch.allclose(batch_colors[c : c + 1], colors, atol=1e-12)
        assert torch.allclose(batch_alphas[c : c + 1], alphas, atol=1e-12)
        assert torch.equal(meta["radii"][c : c + 1], meta_c["radii"])
    assert not torch.allclose(batch_colors[0], batch_colors[1])  # the two views differ


def test_per_camera_colors(backend):
    scene = random_scene(N=30, C=2, dtype=torch.float64)
    per_cam = torch.stack([scene["colors"], 1.0 - scene["colors"]])
    colors, _, _ = render({**scene, "colors": per_cam}, backend=backend)
    for c in range(2):
        single = {
            **scene,
            "viewmats": scene["viewmats"][c : c + 1],
            "Ks": scene["Ks"][c : c + 1],
            "colors": per_cam[c],
        }
        expected, _, _ = render(single, backend=backend)
        assert torch.allclose(colors[c : c + 1], expected, atol=1e-12)


def test_ortho_camera(backend):
    scene = single_gaussian(dtype=torch.float64)
    scene["Ks"] = make_K(1, torch.float64, f=10.0)  # ortho: mean2d = fx * x + cx
    colors, alphas, meta = render(scene, camera_model="ortho", backend=backend)
    assert meta["means2d"][0, 0].tolist() == pytest.approx([15.5, 15.5])
    assert alphas[0, 15, 15, 0].item() == pytest.approx(0.9, abs=1e-12)


# ------------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------------


def _gradient_scene():
    scene = random_scene(N=12, C=2, dtype=torch.float64, seed=5)
    # make every Gaussian clearly visible and not saturating the 0.99 alpha clamp
    scene["opacities"] = torch.linspace(0.3, 0.8, 12, dtype=torch.float64)
    scene["backgrounds"] = torch.tensor([[0.2, 0.4, 0.6], [0.5, 0.1, 0.3]], dtype=torch.float64)
    return _requires_grad(scene)


@pytest.mark.parametrize("rasterize_mode", ["classic", "antialiased"])
def test_gradients_reach_every_input(backend, rasterize_mode):
    scene = _gradient_scene()
    colors, alphas, meta = render(scene, rasterize_mode=rasterize_mode, render_mode="RGB+D", backend=backend)
    weights = torch.rand(colors.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    loss = (colors * weights).sum() + alphas.sum()
    loss.backward()
    for key in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks", "backgrounds"):
        grad = scene[key].grad
        assert grad is not None, key
        assert torch.isfinite(grad).all(), key
        assert grad.abs().sum() > 1e-8, key
    # every visible Gaussian gets a gradient on its mean and opacity
    visible = (meta["radii"] > 0).all(-1).any(0)
    assert visible.sum() >= 8
    assert (scene["means"].grad[visible].abs().sum(-1) > 0).all()
    assert (scene["opacities"].grad[visible] != 0).all()
    # means2d keeps its gradient for densification strategies
    assert meta["means2d"].grad is not None and meta["means2d"].grad.shape == (2, 12, 2)
    assert meta["means2d"].grad.abs().sum() > 0


def test_sh_view_direction_uses_camera_position_and_passes_gradient(backend):
    from gsplat_py.rendering import reference

    scene = _gradient_scene()
    coeffs = 0.3 * torch.randn(12, 4, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    scene["colors"] = coeffs.requires_grad_(True)
    colors_sh, _, meta = render(scene, sh_degree=1, backend=backend)
    colors_sh.sum().backward()
    assert torch.isfinite(scene["colors"].grad).all()
    assert (scene["colors"].grad.abs().sum(dim=(0, 2)) > 0).all()  # every used SH basis gets gradient
    grad_sh = scene["viewmats"].grad.clone()

    # The same colours evaluated by hand (view direction = mean - camera centre), passed as constant
    # per-camera colours: identical image, but the viewmat gradient lacks the view-direction term.
    with torch.no_grad():
        campos = torch.inverse(scene["viewmats"])[:, :3, 3]
        dirs = scene["means"][None] - campos[:, None]
        masks = (meta["radii"] > 0).all(-1)
        rgb = torch.clamp_min(
            reference.spherical_harmonics(1, dirs, coeffs.expand(2, 12, 4, 3), masks) + 0.5, 0
        )
    viewmats = scene["viewmats"].detach().clone().requires_grad_(True)
    base = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in scene.items()}
    colors_rgb, _, _ = render({**base, "viewmats": viewmats, "colors": rgb}, backend=backend)
    assert torch.allclose(colors_rgb, colors_sh.detach(), atol=1e-12)
    colors_rgb.sum().backward()
    grad_geometry_only = viewmats.grad
    assert torch.isfinite(grad_sh).all()
    assert (grad_sh - grad_geometry_only).abs().max() > 1e-6


def test_absgrad(backend):
    scene = _gradient_scene()
    colors, alphas, meta = render(scene, absgrad=True, backend=backend)
    weights = torch.randn(colors.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    (colors * weights).sum().backward()
    means2d = meta["means2d"]
    absgrad = means2d.absgrad
    assert absgrad.shape == (2, 12, 2)
    assert torch.isfinite(absgrad).all() and (absgrad >= 0).all()
    assert absgrad.sum() > 0
    # |sum of per-pixel gradients| <= sum of |per-pixel gradients|
    assert (means2d.grad.abs() <= absgrad + 1e-9).all()
    # culled entries get nothing
    culled = ~(meta["radii"] > 0).all(-1)
    assert (absgrad[culled] == 0).all()


def test_absgrad_off_leaves_attribute_unset(backend):
    scene = _gradient_scene()
    colors, _, meta = render(scene, absgrad=False, backend=backend)
    colors.sum().backward()
    assert getattr(meta["means2d"], "absgrad", None) is None
