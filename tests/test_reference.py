"""Exact-answer tests of the plain-PyTorch reference ops (gsplat_py.reference)."""

import math

import pytest
import torch

from gsplat_py.rendering import reference as ref

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2_2 = 0.31539156525252005
C3_3 = 0.3731763325901154


def camera(f, cx, cy, dtype=torch.float64):
    viewmats = torch.eye(4, dtype=dtype)[None]
    Ks = torch.tensor([[[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]]], dtype=dtype)
    return viewmats, Ks


def render(means2d, conics, colors, opacities, radii, depths, width, height, tile_size=16, **kwargs):
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    _, offsets, ids, _ = ref.bin_gaussians_to_tiles(means2d, radii, depths, tile_size, tw, th)
    return ref.rasterize_to_pixels(
        means2d, conics, colors, opacities, width, height, tile_size, offsets, ids, **kwargs
    )


def sequential_render(means2d, conics, colors, opacities, radii, depths, width, height, backgrounds=None):
    """The blending rule of docs/architecture.md written as the literal front-to-back loop, whole image."""
    C, N, D = colors.shape
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px, py = xs.to(means2d.dtype) + 0.5, ys.to(means2d.dtype) + 0.5
    images, alphas = [], []
    for c in range(C):
        T = torch.ones(height, width, dtype=means2d.dtype)
        color = torch.zeros(height, width, D, dtype=means2d.dtype)
        done = torch.zeros(height, width, dtype=torch.bool)
        for n in torch.sort(depths[c], stable=True).indices.tolist():
            if radii[c, n, 0] <= 0 or radii[c, n, 1] <= 0:
                continue
            dx, dy = means2d[c, n, 0] - px, means2d[c, n, 1] - py
            a, b, cc = conics[c, n]
            sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = torch.clamp(opacities[c, n] * torch.exp(-sigma), max=0.999)  # gsplat's cap
            considered = ~done & (sigma >= 0) & (alpha >= 1.0 / 255.0)
            next_T = T * (1 - alpha)
            stop = considered & (next_T <= 1e-4)
            blend = considered & ~stop
            done = done | stop
            color = color + torch.where(blend, alpha * T, 0.0)[..., None] * colors[c, n]
            T = torch.where(blend, next_T, T)
        if backgrounds is not None:
            color = color + T[..., None] * backgrounds[c]
        images.append(color)
        alphas.append(1 - T[..., None])
    return torch.stack(images), torch.stack(alphas)


def random_scene(C=2, N=40, width=45, height=37, dtype=torch.float64, seed=0):
    """Random Gaussians in front of C slightly different cameras, projected with the reference."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(N, 3, generator=g, dtype=dtype) * torch.tensor([2.0, 2.0, 2.0], dtype=dtype)
    means = means - torch.tensor([1.0, 1.0, -3.0], dtype=dtype)
    quats = torch.randn(N, 4, generator=g, dtype=dtype)
    scales = torch.rand(N, 3, generator=g, dtype=dtype) * 0.15 + 0.02
    viewmats = torch.eye(4, dtype=dtype).repeat(C, 1, 1)
    viewmats[:, 0, 3] = torch.linspace(-0.2, 0.2, C, dtype=dtype)
    Ks = torch.tensor([[30.0, 0, width / 2], [0, 30.0, height / 2], [0, 0, 1]], dtype=dtype).repeat(C, 1, 1)
    radii, means2d, depths, conics, _ = ref.project_gaussians(
        means, quats, scales, viewmats, Ks, width, height
    )
    colors = torch.rand(C, N, 3, generator=g, dtype=dtype)
    opacities = torch.rand(C, N, generator=g, dtype=dtype) * 0.9 + 0.1
    backgrounds = torch.rand(C, 3, generator=g, dtype=dtype)
    return radii, means2d, depths, conics, colors, opacities, backgrounds


# ---------------------------------------------------------------------------------------------- projection


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_isotropic_gaussian_facing_camera(dtype):
    f, s, z, W, H = 40.0, 0.2, 4.0, 33, 33
    sigma_px = f * s / z  # 2 pixels
    viewmats, Ks = camera(f, W / 2, H / 2, dtype)
    means = torch.tensor([[0.0, 0.0, z]], dtype=dtype)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype)
    scales = torch.full((1, 3), s, dtype=dtype)
    radii, means2d, depths, conics, comp = ref.project_gaussians(
        means, quats, scales, viewmats, Ks, W, H, eps2d=0.0, calc_compensations=True
    )
    torch.testing.assert_close(means2d, torch.tensor([[[W / 2, H / 2]]], dtype=dtype))
    torch.testing.assert_close(depths, torch.tensor([[z]], dtype=dtype))
    torch.testing.assert_close(conics, torch.tensor([[[1 / sigma_px**2, 0.0, 1 / sigma_px**2]]], dtype=dtype))
    torch.testing.assert_close(comp, torch.ones(1, 1, dtype=dtype))
    assert radii.dtype == torch.int32
    assert radii.tolist() == [[[math.ceil(3.33 * sigma_px)] * 2]]

    opacity, color = 0.7, torch.tensor([0.2, 0.5, 0.9], dtype=dtype)
    img, alpha = render(
        means2d, conics, color.expand(1, 1, 3), torch.full((1, 1), opacity, dtype=dtype), radii, depths, W, H
    )
    # Centre pixel (16, 16) has its centre (16.5, 16.5) exactly on the mean: sigma = 0.
    torch.testing.assert_close(img[0, 16, 16], opacity * color)
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    r2 = (xs + 0.5 - W / 2) ** 2 + (ys + 0.5 - H / 2) ** 2
    a = opacity * torch.exp(-0.5 * r2.to(dtype) / sigma_px**2)
    a = torch.where(a >= 1 / 255, a, 0.0)
    torch.testing.assert_close(img[0], a[..., None] * color)
    torch.testing.assert_close(alpha[0, ..., 0], a)


def test_projection_culling_gives_zeros_and_finite_gradients():
    dtype = torch.float64
    viewmats, Ks = camera(30.0, 20.0, 15.0, dtype)
    means = torch.tensor(
        [
            [0.0, 0.0, 3.0],  # visible
            [0.0, 0.0, -3.0],  # behind the camera
            [0.0, 0.0, 0.0],  # in the camera centre (z = 0)
            [50.0, 0.0, 3.0],  # far outside the image
            [0.1, 0.1, 3.0],  # too transparent
            [0.0, 0.0, 2e10],
        ],  # beyond the far plane
        dtype=dtype,
        requires_grad=True,
    )
    N = means.shape[0]
    quats = torch.tensor([[1.0, 0.2, -0.1, 0.3]] * N, dtype=dtype, requires_grad=True)
    scales = torch.full((N, 3), 0.1, dtype=dtype, requires_grad=True)
    opacities = torch.tensor([0.8, 0.8, 0.8, 0.8, 1e-3, 0.8], dtype=dtype)
    viewmats.requires_grad_(True)
    Ks.requires_grad_(True)
    radii, means2d, depths, conics, comp = ref.project_gaussians(
        means, quats, scales, viewmats, Ks, 40, 30, opacities=opacities, calc_compensations=True
    )
    assert (radii[0, 0] > 0).all()
    assert (radii[0, 1:] == 0).all()
    for out in (means2d[0, 1:], depths[0, 1:], conics[0, 1:], comp[0, 1:]):
        assert (out == 0).all()
    (means2d.sum() + depths.sum() + conics.sum() + comp.sum()).backward()
    for t in (means, quats, scales, viewmats, Ks):
        assert torch.isfinite(t.grad).all()
    assert (means.grad[1:] == 0).all() and (scales.grad[1:] == 0).all()


def test_projection_gradcheck():
    dtype = torch.float64
    g = torch.Generator().manual_seed(1)
    means = (torch.rand(4, 3, generator=g, dtype=dtype) - 0.5) * 0.6 + torch.tensor(
        [0.0, 0.0, 4.0], dtype=dtype
    )
    quats = torch.randn(4, 4, generator=g, dtype=dtype)
    scales = torch.rand(4, 3, generator=g, dtype=dtype) * 0.2 + 0.05
    opacities = torch.rand(4, generator=g, dtype=dtype) * 0.5 + 0.5
    angle = 0.1  # a rotated and translated camera, so that R and t both matter
    viewmat = torch.eye(4, dtype=dtype)
    viewmat[:3, :3] = torch.tensor(
        [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]],
        dtype=dtype,
    )
    viewmat[:3, 3] = torch.tensor([0.1, -0.05, 0.2], dtype=dtype)
    Ks = torch.tensor([[[50.0, 0, 33.0], [0, 48.0, 23.0], [0, 0, 1]]], dtype=dtype)
    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, viewmat[None], Ks)]

    def fn(means, quats, scales, viewmats, Ks):
        radii, means2d, depths, conics, comp = ref.project_gaussians(
            means, quats, scales, viewmats, Ks, 64, 48, opacities=opacities, calc_compensations=True
        )
        assert (radii > 0).all()
        return means2d, depths, conics, comp

    assert torch.autograd.gradcheck(fn, inputs)


def test_projection_gradcheck_with_active_frustum_clamp():
    # x/z = 1.2 is beyond lim_x_pos = (64 - 32)/64 + 0.15 = 0.65: the Jacobian uses the clamped point,
    # and the gradient to K flows through the clamp bound.
    dtype = torch.float64
    means = torch.tensor([[4.8, 0.3, 4.0]], dtype=dtype, requires_grad=True)
    quats = torch.tensor([[0.9, 0.1, 0.3, -0.2]], dtype=dtype, requires_grad=True)
    scales = torch.tensor([[2.0, 1.5, 1.0]], dtype=dtype, requires_grad=True)
    viewmats, Ks = camera(64.0, 32.0, 24.0, dtype)
    viewmats.requires_grad_(True)
    Ks.requires_grad_(True)

    def fn(means, quats, scales, viewmats, Ks):
        radii, means2d, depths, conics, comp = ref.project_gaussians(
            means, quats, scales, viewmats, Ks, 64, 48, calc_compensations=True
        )
        assert (radii > 0).all()
        return means2d, depths, conics, comp

    assert torch.autograd.gradcheck(fn, (means, quats, scales, viewmats, Ks))


def test_ortho_projection():
    dtype = torch.float64
    viewmats, Ks = camera(10.0, 20.0, 15.0, dtype)
    means = torch.tensor([[0.5, -0.5, 7.0]], dtype=dtype)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype)
    scales = torch.full((1, 3), 0.3, dtype=dtype)
    _, means2d, depths, conics, _ = ref.project_gaussians(
        means, quats, scales, viewmats, Ks, 40, 30, eps2d=0.0, camera_model="ortho"
    )
    torch.testing.assert_close(means2d, torch.tensor([[[25.0, 10.0]]], dtype=dtype))
    torch.testing.assert_close(depths, torch.tensor([[7.0]], dtype=dtype))
    torch.testing.assert_close(conics, torch.tensor([[[1 / 9.0, 0.0, 1 / 9.0]]], dtype=dtype))
    with pytest.raises(NotImplementedError):
        ref.project_gaussians(means, quats, scales, viewmats, Ks, 40, 30, camera_model="ftheta")


# ------------------------------------------------------------------------------------------ rasterization


def test_opaque_front_gaussian_dominates():
    dtype = torch.float64
    means2d = torch.tensor([[[8.5, 8.5], [8.5, 8.5]]], dtype=dtype, requires_grad=True)
    conics = torch.tensor([[[0.1, 0.0, 0.1], [0.1, 0.0, 0.1]]], dtype=dtype)
    colors = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=dtype)
    opacities = torch.tensor([[0.5, 1.0]], dtype=dtype, requires_grad=True)  # the second one is in front
    depths = torch.tensor([[5.0, 2.0]], dtype=dtype)
    radii = torch.full((1, 2, 2), 8, dtype=torch.int32)
    bg = torch.tensor([[0.0, 0.0, 1.0]], dtype=dtype)
    img, alpha = render(means2d, conics, colors, opacities, radii, depths, 17, 17, backgrounds=bg)

    front, back = 0.999, 0.5  # alpha of the front one is capped at 0.999 (gsplat's cap)
    expected = front * colors[0, 1] + (1 - front) * back * colors[0, 0] + (1 - front) * (1 - back) * bg[0]
    torch.testing.assert_close(img[0, 8, 8], expected)
    torch.testing.assert_close(alpha[0, 8, 8, 0], torch.tensor(1 - (1 - front) * (1 - back), dtype=dtype))
    # The capped alpha gets no gradient through the cap.
    (img[0, 8, 8] * torch.tensor([1.0, 2.0, 3.0], dtype=dtype)).sum().backward()
    assert opacities.grad[0, 1] == 0
    assert opacities.grad[0, 0] != 0


def test_background_shows_where_there_is_no_gaussian():
    dtype = torch.float32
    means2d = torch.tensor([[[3.0, 3.0]]], dtype=dtype)
    conics = torch.tensor([[[1.0, 0.0, 1.0]]], dtype=dtype)
    colors = torch.tensor([[[1.0, 1.0, 1.0]]], dtype=dtype)
    opacities = torch.tensor([[0.9]], dtype=dtype)
    radii = torch.full((1, 1, 2), 4, dtype=torch.int32)
    depths = torch.ones(1, 1, dtype=dtype)
    bg = torch.tensor([[0.25, 0.5, 0.75]], dtype=dtype)
    img, alpha = render(means2d, conics, colors, opacities, radii, depths, 40, 30, backgrounds=bg)
    assert torch.equal(img[0, 20:, 20:], bg[0].expand(10, 20, 3))  # other tiles
    assert torch.equal(img[0, 12:16, 12:16], bg[0].expand(4, 4, 3))  # same tile, alpha < 1/255
    assert torch.equal(alpha[0, 12:, 12:], torch.zeros(18, 28, 1))
    assert not torch.equal(img[0, 2, 2], bg[0])


@pytest.mark.parametrize("behind", [False, True])
def test_empty_scene_renders_background(behind):
    dtype = torch.float32
    W, H = 37, 21
    viewmats, Ks = camera(30.0, W / 2, H / 2, dtype)
    N = 5 if behind else 0
    means = torch.zeros(N, 3, dtype=dtype) + torch.tensor([0.0, 0.0, -2.0])
    means = means.requires_grad_(True)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * N, dtype=dtype).reshape(N, 4)
    scales = torch.full((N, 3), 0.5, dtype=dtype)
    radii, means2d, depths, conics, _ = ref.project_gaussians(means, quats, scales, viewmats, Ks, W, H)
    colors = torch.ones(1, N, 3, dtype=dtype)
    opacities = torch.ones(1, N, dtype=dtype)
    bg = torch.tensor([[0.1, 0.2, 0.3]], dtype=dtype, requires_grad=True)
    img, alpha = render(means2d, conics, colors, opacities, radii, depths, W, H, backgrounds=bg)
    assert img.shape == (1, H, W, 3) and alpha.shape == (1, H, W, 1)
    assert torch.equal(img, bg.detach()[:, None, None, :].expand(1, H, W, 3))
    assert torch.equal(alpha, torch.zeros(1, H, W, 1))
    img.sum().backward()
    torch.testing.assert_close(bg.grad, torch.full((1, 3), float(H * W)))
    if behind:  # culled Gaussians contribute nothing, not even a gradient
        assert means.grad is None or torch.equal(means.grad, torch.zeros_like(means))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transmittance_stop_rule(dtype):
    # Ten Gaussians of alpha 0.8 over a single pixel, given in shuffled depth order: the 6th would bring T
    # to 0.2**6 <= 1e-4, so it and all behind it are not blended; T ends at 0.2**5.
    n = 10
    depth_rank = torch.tensor([3, 7, 0, 9, 1, 5, 8, 2, 6, 4])
    means2d = torch.full((1, n, 2), 0.5, dtype=dtype)
    conics = torch.tensor([1.0, 0.0, 1.0], dtype=dtype).expand(1, n, 3)
    opacities = torch.full((1, n), 0.8, dtype=dtype)
    colors = torch.eye(n, dtype=dtype)[None]  # colour channel k = weight of Gaussian k
    depths = depth_rank.to(dtype)[None] + 1
    radii = torch.full((1, n, 2), 2, dtype=torch.int32)
    img, alpha = render(means2d, conics, colors, opacities, radii, depths, 1, 1)
    expected = torch.where(depth_rank < 5, 0.8 * 0.2 ** depth_rank.to(dtype), 0.0)
    torch.testing.assert_close(img[0, 0, 0], expected)
    torch.testing.assert_close(alpha[0, 0, 0, 0], torch.tensor(1 - 0.2**5, dtype=dtype))


def test_negative_sigma_is_skipped_with_finite_gradients():
    dtype = torch.float32
    means2d = torch.tensor([[[8.0, 8.0], [8.0, 8.0]]], dtype=dtype, requires_grad=True)
    conics = torch.tensor([[[-50.0, 0.0, -50.0], [0.5, 0.0, 0.5]]], dtype=dtype, requires_grad=True)
    colors = torch.tensor([[[1.0], [2.0]]], dtype=dtype, requires_grad=True)
    opacities = torch.tensor([[0.9, 0.5]], dtype=dtype, requires_grad=True)
    radii = torch.full((1, 2, 2), 8, dtype=torch.int32)
    depths = torch.tensor([[1.0, 2.0]], dtype=dtype)
    img, _ = render(means2d, conics, colors, opacities, radii, depths, 16, 16)
    ref_img, _ = render(
        means2d[:, 1:], conics[:, 1:], colors[:, 1:], opacities[:, 1:], radii[:, 1:], depths[:, 1:], 16, 16
    )
    torch.testing.assert_close(img, ref_img)
    img.sum().backward()
    for t in (means2d, conics, colors, opacities):
        assert torch.isfinite(t.grad).all()
        assert (t.grad[0, 0] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_elements", [ref.CHUNK_ELEMENTS, 2000])
def test_rasterization_matches_sequential_loop(dtype, chunk_elements, monkeypatch):
    monkeypatch.setattr(ref, "CHUNK_ELEMENTS", chunk_elements)  # small: many chunks, each tile on its own
    W, H = 45, 37  # partial tiles on the right and bottom
    radii, means2d, depths, conics, colors, opacities, bg = random_scene(width=W, height=H, dtype=dtype)
    inputs = [t.clone().requires_grad_(True) for t in (means2d, conics, colors, opacities, bg)]
    img, alpha = render(
        inputs[0], inputs[1], inputs[2], inputs[3], radii, depths, W, H, backgrounds=inputs[4]
    )
    loop_inputs = [t.clone().requires_grad_(True) for t in (means2d, conics, colors, opacities, bg)]
    loop_img, loop_alpha = sequential_render(
        loop_inputs[0], loop_inputs[1], loop_inputs[2], loop_inputs[3], radii, depths, W, H, loop_inputs[4]
    )
    torch.testing.assert_close(img, loop_img)
    torch.testing.assert_close(alpha, loop_alpha)
    weights = torch.rand(img.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    (img * weights).sum().add(alpha.sum()).backward()
    (loop_img * weights).sum().add(loop_alpha.sum()).backward()
    for ours, theirs in zip(inputs, loop_inputs):
        torch.testing.assert_close(ours.grad, theirs.grad)


@pytest.mark.parametrize("opacity", [0.9, 0.99])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stop_rule_at_the_rounding_edge(opacity, dtype):
    # With alpha 0.9, T after four blends is 1e-4 up to rounding, which differs between float32 and float64:
    # the same Gaussians as in the literal loop in the same dtype must be blended.
    n = 6
    means2d = torch.full((1, n, 2), 0.5, dtype=dtype)
    conics = torch.tensor([1.0, 0.0, 1.0], dtype=dtype).expand(1, n, 3)
    opacities = torch.full((1, n), opacity, dtype=dtype)
    colors = torch.eye(n, dtype=dtype)[None]
    depths = torch.arange(n, dtype=dtype)[None]
    radii = torch.full((1, n, 2), 2, dtype=torch.int32)
    args = (means2d, conics, colors, opacities, radii, depths, 1, 1)
    img, alpha = render(*args)
    loop_img, loop_alpha = sequential_render(*args)
    assert torch.equal(img > 0, loop_img > 0)
    torch.testing.assert_close(img, loop_img)
    torch.testing.assert_close(alpha, loop_alpha)


# ---------------------------------------------------------------------------------------------- absgrad


def test_absgrad_bounds_and_single_pixel_equality():
    W, H = 45, 37
    radii, means2d, depths, conics, colors, opacities, bg = random_scene(width=W, height=H)
    means2d = means2d.clone().requires_grad_(True)
    img, _ = render(means2d, conics, colors, opacities, radii, depths, W, H, backgrounds=bg, absgrad=True)
    (img * torch.randn(img.shape, dtype=img.dtype)).sum().backward()
    assert means2d.absgrad.shape == means2d.shape
    assert (means2d.absgrad >= means2d.grad.abs() - 1e-12).all()
    assert (means2d.absgrad > means2d.grad.abs() + 1e-6).any()

    # One pixel: the per-pixel gradient is the gradient.
    g = torch.Generator().manual_seed(5)
    n = 6
    means2d = (torch.rand(1, n, 2, generator=g, dtype=torch.float64) * 2 - 0.5).requires_grad_(True)
    conics = torch.tensor([0.5, 0.1, 0.4], dtype=torch.float64).repeat(1, n, 1)
    colors = torch.rand(1, n, 3, generator=g, dtype=torch.float64)
    opacities = torch.full((1, n), 0.3, dtype=torch.float64)
    depths = torch.rand(1, n, generator=g, dtype=torch.float64)
    radii = torch.full((1, n, 2), 3, dtype=torch.int32)
    img, _ = render(means2d, conics, colors, opacities, radii, depths, 1, 1, absgrad=True)
    (img * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).sum().backward()
    assert (means2d.grad != 0).all()
    torch.testing.assert_close(means2d.absgrad, means2d.grad.abs())


# ---------------------------------------------------------------------------------------------- binning


def test_binning_order_and_straddling_gaussian():
    dtype = torch.float32
    # Camera 0: Gaussian 0 straddles all four tiles of a 32x32 image; 1..4 sit in tile (0, 0) with depths
    # 3, 1, 2, 1 (a tie between 2 and 4); 5 is culled. Camera 1: only Gaussian 2, in tile (1, 1).
    means2d = torch.tensor(
        [
            [[16.0, 16.0], [5.0, 5.0], [6.0, 5.0], [5.0, 6.0], [4.0, 4.0], [20.0, 20.0]],
            [[0.0, 0.0], [0.0, 0.0], [25.0, 25.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
        ],
        dtype=dtype,
    )
    radii = torch.tensor(
        [[[4, 4], [2, 2], [2, 2], [2, 2], [2, 2], [0, 0]], [[0, 0], [0, 0], [3, 3], [0, 0], [0, 0], [0, 0]]],
        dtype=torch.int32,
    )
    depths = torch.tensor([[5.0, 3.0, 1.0, 2.0, 1.0, 0.5], [0.0, 0.0, 4.0, 0.0, 0.0, 0.0]], dtype=dtype)
    tiles_per_gauss, offsets, ids, _ = ref.bin_gaussians_to_tiles(means2d, radii, depths, 16, 2, 2)
    assert tiles_per_gauss.dtype == offsets.dtype == ids.dtype == torch.int32
    assert tiles_per_gauss.tolist() == [[4, 1, 1, 1, 1, 0], [0, 0, 1, 0, 0, 0]]
    # Tile (0,0) of camera 0: ascending depth, the tie in flat-index order, the straddling one last.
    assert offsets.tolist() == [[[0, 5], [6, 7]], [[8, 8], [8, 8]]]
    assert ids.tolist() == [2, 4, 3, 1, 0, 0, 0, 0, 6 + 2]


def test_binning_rectangle_is_clamped_to_the_grid():
    means2d = torch.tensor([[[-3.0, 40.0], [100.0, 100.0]]])
    radii = torch.tensor([[[5, 5], [5, 5]]], dtype=torch.int32)
    depths = torch.tensor([[1.0, 2.0]])
    tiles_per_gauss, offsets, ids, _ = ref.bin_gaussians_to_tiles(means2d, radii, depths, 16, 3, 3)
    # x in [floor(-8/16), ceil(2/16)) = [-1, 1) -> [0, 1); y in [floor(35/16), ceil(45/16)) = [2, 3).
    assert tiles_per_gauss.tolist() == [[1, 0]]
    assert offsets.reshape(-1).tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert ids.tolist() == [0]


# ------------------------------------------------------------------------------------ spherical harmonics


def test_sh_degree0_and_extra_coefficients_ignored():
    g = torch.Generator().manual_seed(0)
    dirs = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    coeffs = torch.randn(2, 5, 16, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ref.spherical_harmonics(0, dirs, coeffs), C0 * coeffs[..., 0, :])
    torch.testing.assert_close(
        ref.spherical_harmonics(1, dirs, coeffs), ref.spherical_harmonics(1, dirs, coeffs[..., :4, :])
    )


def test_sh_degree1_formula():
    g = torch.Generator().manual_seed(1)
    dirs = torch.randn(7, 3, generator=g, dtype=torch.float64) * 3  # not normalised
    coeffs = torch.randn(7, 4, 3, generator=g, dtype=torch.float64)
    x, y, z = (dirs / dirs.norm(dim=-1, keepdim=True)).unbind(-1)
    expected = (
        C0 * coeffs[:, 0]
        - C1 * y[:, None] * coeffs[:, 1]
        + C1 * z[:, None] * coeffs[:, 2]
        - C1 * x[:, None] * coeffs[:, 3]
    )
    torch.testing.assert_close(ref.spherical_harmonics(1, dirs, coeffs), expected)


def test_sh_basis_along_z_axis():
    # Entry k has only coefficient k set, so it returns basis function k. On the z axis every basis
    # function with an x or y factor vanishes.
    dirs = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64).expand(16, 3)
    coeffs = torch.eye(16, dtype=torch.float64)[..., None].expand(16, 16, 3)
    basis = ref.spherical_harmonics(3, dirs, coeffs)[:, 0]
    expected = torch.zeros(16, dtype=torch.float64)
    expected[0], expected[2], expected[6], expected[12] = C0, C1, 2 * C2_2, 2 * C3_3
    torch.testing.assert_close(basis, expected)


def test_sh_masks_give_zero_and_no_gradient():
    g = torch.Generator().manual_seed(2)
    dirs = torch.randn(6, 3, generator=g, dtype=torch.float64)
    dirs[1] = 0.0  # masked directions may even be degenerate
    dirs.requires_grad_(True)
    coeffs = torch.randn(6, 16, 3, generator=g, dtype=torch.float64, requires_grad=True)
    masks = torch.tensor([True, False, True, False, True, True])
    out = ref.spherical_harmonics(3, dirs, coeffs, masks)
    assert (out[~masks] == 0).all()
    torch.testing.assert_close(out[masks], ref.spherical_harmonics(3, dirs[masks], coeffs[masks]))
    out.sum().backward()
    assert torch.isfinite(dirs.grad).all() and torch.isfinite(coeffs.grad).all()
    assert (dirs.grad[~masks] == 0).all() and (coeffs.grad[~masks] == 0).all()


def test_sh_gradcheck():
    g = torch.Generator().manual_seed(3)
    dirs = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    coeffs = torch.randn(4, 16, 3, generator=g, dtype=torch.float64, requires_grad=True)
    for degree in range(4):
        assert torch.autograd.gradcheck(
            lambda d, c, k=degree: ref.spherical_harmonics(k, d, c), (dirs, coeffs)
        )
