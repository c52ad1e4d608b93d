"""Exact-answer tests of gsplat_py.training.metrics (PSNR, SSIM, the L1 + D-SSIM loss)."""

import math

import pytest
import torch

from gsplat_py.training.metrics import l1_ssim_loss, psnr, ssim

C1 = 0.01**2
C2 = 0.03**2


def random_image(*shape, seed=0, dtype=torch.float64):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def loop_ssim(x, y, padding, window_size=11, sigma=1.5, data_range=1.0):
    """SSIM of one image pair [H, W, C] written as explicit loops over window positions, in Python floats.

    Uses centred moments sum_w (x - mu_x)(y - mu_y) over an explicit 2-D window (equal to E[xy] - mu_x mu_y
    since the weights sum to 1). "same" zero-pads the image by window_size // 2, "valid" does not pad.
    """
    H, W, C = x.shape
    half = window_size // 2
    g = [math.exp(-((i - half) ** 2) / (2 * sigma**2)) for i in range(window_size)]
    weights = [[gi * gj / sum(g) ** 2 for gj in g] for gi in g]
    x, y = x.tolist(), y.tolist()

    def pixel(img, r, c, ch):
        return img[r][c][ch] if 0 <= r < H and 0 <= c < W else 0.0

    if padding == "same":
        centres = [(r, c) for r in range(H) for c in range(W)]
    else:
        centres = [(r, c) for r in range(half, H - half) for c in range(half, W - half)]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    total = 0.0
    for ch in range(C):
        for r0, c0 in centres:
            window = []
            for i in range(window_size):
                for j in range(window_size):
                    r, c = r0 - half + i, c0 - half + j
                    window.append((weights[i][j], pixel(x, r, c, ch), pixel(y, r, c, ch)))
            mu_x = sum(w * a for w, a, _ in window)
            mu_y = sum(w * b for w, _, b in window)
            var_x = sum(w * (a - mu_x) ** 2 for w, a, _ in window)
            var_y = sum(w * (b - mu_y) ** 2 for w, _, b in window)
            cov = sum(w * (a - mu_x) * (b - mu_y) for w, a, b in window)
            numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
            total += numerator / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return total / (C * len(centres))


# ---- PSNR --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_psnr_identical_images_is_inf(dtype):
    x = random_image(9, 7, 3, dtype=dtype)
    value = psnr(x, x.clone())
    assert value.shape == () and value.dtype == dtype
    assert math.isinf(value.item()) and value.item() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("error", [0.5, 0.125, -0.0625])
def test_psnr_constant_error(dtype, error):
    # Powers of two: the target, the error, its square and the mean are all exact in both dtypes.
    target = torch.full((8, 16, 3), 0.25, dtype=dtype)
    value = psnr(target + error, target).item()
    assert value == pytest.approx(-10.0 * math.log10(error**2), rel=1e-6 if dtype == torch.float32 else 1e-14)


def test_psnr_max_value():
    target = torch.zeros(4, 4, 3, dtype=torch.float64)
    value = psnr(target + 0.5, target, max_value=255.0).item()
    assert value == pytest.approx(10.0 * math.log10(255.0**2 / 0.25), rel=1e-14)


def test_psnr_batch_dimensions():
    render, target = random_image(2, 3, 6, 5, 3, seed=1), random_image(2, 3, 6, 5, 3, seed=2)
    batched = psnr(render, target)
    assert batched.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            mse = ((render[i, j] - target[i, j]) ** 2).mean().item()
            assert batched[i, j].item() == pytest.approx(-10.0 * math.log10(mse), rel=1e-12)


# ---- SSIM --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_of_identical_images_is_one(padding, dtype):
    x = random_image(20, 17, 3, dtype=dtype)
    value = ssim(x, x.clone(), padding=padding)
    assert value.shape == () and value.dtype == dtype
    assert abs(value.item() - 1.0) < 1e-6


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_ssim_is_symmetric(padding):
    x, y = random_image(20, 17, 3, seed=1), random_image(20, 17, 3, seed=2)
    assert ssim(x, y, padding=padding).item() == pytest.approx(ssim(y, x, padding=padding).item(), abs=1e-12)


@pytest.mark.parametrize("mu_x, mu_y", [(0.2, 0.7), (0.5, 0.5), (0.0, 1.0), (0.9, 0.3)])
def test_ssim_of_constant_images_closed_form(mu_x, mu_y):
    # Constant images have zero local variance and covariance, so the contrast-structure term is C2 / C2.
    x = torch.full((16, 14, 3), mu_x, dtype=torch.float64)
    y = torch.full((16, 14, 3), mu_y, dtype=torch.float64)
    expected = (2 * mu_x * mu_y + C1) / (mu_x**2 + mu_y**2 + C1)
    assert ssim(x, y).item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_ssim_matches_loop_reference(padding):
    x = random_image(20, 17, 3, seed=3)
    y = (x + random_image(20, 17, 3, seed=4) - 0.5).clamp(0.0, 1.0)  # correlated, so SSIM is mid-range
    expected = loop_ssim(x, y, padding)
    assert 0.2 < expected < 0.95
    assert ssim(x, y, padding=padding).item() == pytest.approx(expected, abs=1e-6)


def test_ssim_matches_loop_reference_other_parameters():
    x, y = random_image(13, 12, 2, seed=5), random_image(13, 12, 2, seed=6)
    expected = loop_ssim(x, y, "valid", window_size=7, sigma=2.0, data_range=2.0)
    assert ssim(x, y, window_size=7, sigma=2.0, data_range=2.0).item() == pytest.approx(expected, abs=1e-6)


def test_ssim_float32_close_to_float64():
    x, y = random_image(20, 17, 3, seed=7), random_image(20, 17, 3, seed=8)
    assert ssim(x.float(), y.float()).item() == pytest.approx(ssim(x, y).item(), abs=1e-5)


def test_ssim_matches_skimage():
    metrics = pytest.importorskip("skimage.metrics")
    x, y = random_image(20, 17, 3, seed=9), random_image(20, 17, 3, seed=10)
    expected = metrics.structural_similarity(
        x.numpy(),
        y.numpy(),
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert ssim(x, y).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_ssim_batch_dimensions(padding):
    x, y = random_image(2, 3, 12, 11, 3, seed=11), random_image(2, 3, 12, 11, 3, seed=12)
    batched = ssim(x, y, padding=padding)
    assert batched.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            single = ssim(x[i, j], y[i, j], padding=padding).item()
            assert batched[i, j].item() == pytest.approx(single, abs=1e-12)


def test_ssim_rejects_bad_input():
    x = random_image(20, 17, 3)
    with pytest.raises(ValueError):
        ssim(x, x[:-1])
    with pytest.raises(ValueError):
        ssim(x, x, padding="reflect")
    with pytest.raises(ValueError):
        ssim(x, x, window_size=10)
    with pytest.raises(ValueError):
        ssim(x[:8], x[:8])  # too small for 'valid' windows of 11
    assert ssim(x[:8], x[:8], padding="same").item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_ssim_gradcheck(padding):
    x = random_image(12, 13, 2, seed=13).requires_grad_(True)
    y = random_image(12, 13, 2, seed=14)
    assert torch.autograd.gradcheck(lambda a: ssim(a, y, padding=padding), (x,))


# ---- L1 + D-SSIM loss --------------------------------------------------------------------------------


def test_l1_ssim_loss_value():
    x, y = random_image(2, 14, 15, 3, seed=15), random_image(2, 14, 15, 3, seed=16)
    expected = 0.8 * (x - y).abs().mean().item() + 0.2 * (
        1.0 - 0.5 * (loop_ssim(x[0], y[0], "same") + loop_ssim(x[1], y[1], "same"))
    )
    assert l1_ssim_loss(x, y).item() == pytest.approx(expected, abs=1e-6)
    assert l1_ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert l1_ssim_loss(x, y, ssim_weight=0.0).item() == pytest.approx((x - y).abs().mean().item(), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l1_ssim_loss_gradients(dtype):
    render = random_image(2, 16, 18, 3, seed=17, dtype=dtype).requires_grad_(True)
    target = random_image(2, 16, 18, 3, seed=18, dtype=dtype)
    loss = l1_ssim_loss(render, target)
    assert loss.shape == ()
    loss.backward()
    grad = render.grad
    assert grad.shape == render.shape and torch.isfinite(grad).all()
    assert (grad != 0).float().mean().item() > 0.99
    # The loss decreases along the negative gradient.
    with torch.no_grad():
        assert l1_ssim_loss(render - 1e-2 * grad / grad.norm(), target).item() < loss.item()


@pytest.mark.skipif(
    not __import__("gsplat_py.rendering._backend", fromlist=["x"]).extension_available(),
    reason="C++ extension not built",
)
@pytest.mark.parametrize("shape", [(2, 40, 37, 3), (1, 5, 9, 1), (3, 12, 11, 4)])
def test_fused_ssim_matches_the_composed_ops(shape, monkeypatch):
    """The compiled SSIM the training loss uses (same padding) against the plain-PyTorch one, forward
    and as a VJP with random cotangents, images smaller than the window included; plus gradcheck."""
    from gsplat_py.rendering import ops
    from gsplat_py.training import metrics

    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(shape, generator=g, dtype=torch.float64)
    fused = ops.ssim_same(x, y)
    assert metrics._use_fused_ssim(x, y, 11, 1.5, 1.0, "same")
    monkeypatch.setattr(metrics, "_use_fused_ssim", lambda *args: False)
    composed = ssim(x, y, padding="same")
    assert torch.allclose(fused, composed, rtol=1e-12, atol=1e-14)
    cotangent = torch.randn(shape[0], generator=g, dtype=torch.float64)
    (grad_fused,) = torch.autograd.grad((fused * cotangent).sum(), x)
    (grad_composed,) = torch.autograd.grad((composed * cotangent).sum(), x)
    assert torch.allclose(grad_fused, grad_composed, rtol=1e-10, atol=1e-13)
    small = x[:1, :5, :6].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: ops.ssim_same(a, y[:1, :5, :6]), (small,))
    x32, y32 = x.detach().float(), y.float()
    assert torch.allclose(ops.ssim_same(x32, y32), composed.detach().float(), atol=2e-6)


SSIM_CHILD = r"""
import sys, torch
from gsplat_py.rendering import ops
results = {"level": ops.simd_level()}
for dtype in (torch.float32, torch.float64):
    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, 37, 53, 3, generator=g, dtype=dtype, requires_grad=True)
    y = torch.rand(2, 37, 53, 3, generator=g, dtype=dtype)
    value = ops.ssim_same(x, y)
    (value * torch.tensor([1.0, -2.0], dtype=dtype)).sum().backward()
    results[str(dtype)] = [value.detach(), x.grad]
torch.save(results, sys.argv[1])
"""


@pytest.mark.skipif(
    not __import__("gsplat_py.rendering._backend", fromlist=["x"]).extension_available(),
    reason="C++ extension not built",
)
def test_fused_ssim_gives_the_same_bits_on_every_simd_level(tmp_path):
    """The compiled SSIM's rows are built per SIMD level without fma contraction: every level, forced with
    GSPLAT_PY_SIMD in a subprocess, gives exactly the best level's value and gradient."""
    from test_simd_levels import assert_every_level_gives_the_same_bits

    assert_every_level_gives_the_same_bits(SSIM_CHILD, tmp_path)
