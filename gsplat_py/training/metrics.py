"""Image-quality metrics (PSNR, SSIM) and the 3DGS photometric loss, in plain PyTorch.

All functions take channels-last images ``[..., H, W, C]`` (the layout ``rasterization`` returns) with
values in ``[0, data_range]``; any leading dimensions are batch dimensions. ``psnr`` and ``ssim`` return
one value per image, i.e. a tensor of shape ``[...]`` (0-dim for a single ``[H, W, C]`` image). Everything
is differentiable, so the metrics can be used in losses.

SSIM follows Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), C1 = (0.01 L)^2 and
C2 = (0.03 L)^2, computed per channel and averaged over channels and window positions. Two border
conventions are provided:

* ``padding="valid"`` (default, for evaluation): only windows that lie entirely inside the image, as in
  torchmetrics' ``StructuralSimilarityIndexMeasure`` and skimage's ``structural_similarity`` with
  ``gaussian_weights=True, use_sample_covariance=False``.
* ``padding="same"`` (Inria 3DGS training loss): one window per pixel, with the image zero-padded by
  ``window_size // 2``; the local statistics near the border therefore include the zeros.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from ..rendering import _backend, ops

SSIM_K1 = 0.01
SSIM_K2 = 0.03
PADDINGS = ("valid", "same")


def _check_images(render: Tensor, target: Tensor) -> None:
    if render.shape != target.shape:
        raise ValueError(
            f"render and target must have the same shape, got {tuple(render.shape)} and {tuple(target.shape)}"
        )
    if render.dim() < 3:
        raise ValueError(f"expected images of shape [..., H, W, C], got {tuple(render.shape)}")


def psnr(render: Tensor, target: Tensor, max_value: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio 10 log10(max_value^2 / MSE) of images [..., H, W, C], in dB.

    The MSE is the mean over all pixels and channels of each image; the result has shape [...]. Identical
    images give +inf.
    """
    _check_images(render, target)
    mse = (render - target).square().mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(max_value**2 / mse)


def _gaussian_window(window_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The normalised 1-D Gaussian [window_size]; the 2-D window is its outer product with itself."""
    offsets = torch.arange(window_size, dtype=dtype, device=device) - (window_size - 1) / 2
    window = torch.exp(-offsets.square() / (2.0 * sigma**2))
    return window / window.sum()


def _gaussian_blur(x: Tensor, window: Tensor, padding: str) -> Tensor:
    """Separable Gaussian filtering of every channel of x [B, C, H, W] (zero padding for "same")."""
    channels, size = x.shape[1], window.numel()
    pad = size // 2 if padding == "same" else 0
    vertical = window.view(1, 1, size, 1).expand(channels, 1, size, 1)
    horizontal = window.view(1, 1, 1, size).expand(channels, 1, 1, size)
    x = F.conv2d(x, vertical, padding=(pad, 0), groups=channels)
    return F.conv2d(x, horizontal, padding=(0, pad), groups=channels)


def _use_fused_ssim(
    render: Tensor, target: Tensor, window_size: int, sigma: float, data_range: float, padding: str
) -> bool:
    """The compiled SSIM covers the training loss's case: same padding, 11x11, sigma 1.5, range 1, CPU
    float tensors, no gradient wanted for the target (it is ~10x faster than the composed ops here)."""
    return (
        padding == "same"
        and window_size == 11
        and sigma == 1.5
        and data_range == 1.0
        and render.dim() >= 3
        and render.device.type == "cpu"
        and target.device.type == "cpu"
        and render.dtype in (torch.float32, torch.float64)
        and target.dtype == render.dtype
        and not (torch.is_grad_enabled() and target.requires_grad)
        and _backend.extension_available()
    )


def ssim(
    render: Tensor,
    target: Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    padding: str = "valid",
) -> Tensor:
    """Structural similarity of images [..., H, W, C] (Wang et al. 2004), one value per image: shape [...].

    Local means, variances and the covariance are Gaussian-weighted (window_size x window_size, std sigma)
    and biased (E[xy] - E[x]E[y]). ``padding="valid"`` (default) averages the SSIM map over the windows
    that fit inside the image (torchmetrics / skimage evaluation convention; needs H, W >= window_size);
    ``padding="same"`` zero-pads the image so that every pixel has a window (Inria 3DGS training loss).
    """
    _check_images(render, target)
    if _use_fused_ssim(render, target, window_size, sigma, data_range, padding):
        *batch_shape, height, width, channels = render.shape
        return ops.ssim_same(
            render.reshape(-1, height, width, channels), target.reshape(-1, height, width, channels)
        ).reshape(batch_shape)
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd integer, got {window_size}")
    *batch_shape, height, width, channels = render.shape
    if padding == "valid" and (height < window_size or width < window_size):
        raise ValueError(
            f"padding='valid' needs H, W >= window_size={window_size}, got H={height}, W={width}"
        )

    # [..., H, W, C] -> [B, C, H, W]; filter x, y, x^2, y^2 and xy in one grouped convolution.
    x = render.reshape(-1, height, width, channels).permute(0, 3, 1, 2)
    y = target.reshape(-1, height, width, channels).permute(0, 3, 1, 2)
    window = _gaussian_window(window_size, sigma, render.dtype, render.device)
    stats = _gaussian_blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), window, padding)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.chunk(5, dim=1)

    var_x = e_xx - mu_x.square()
    var_y = e_yy - mu_y.square()
    cov_xy = e_xy - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)) / (
        (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2)
    )
    return ssim_map.mean(dim=(1, 2, 3)).reshape(batch_shape)


def l1_ssim_loss(render: Tensor, target: Tensor, ssim_weight: float = 0.2) -> Tensor:
    """The 3DGS photometric loss (1 - w) * L1 + w * (1 - SSIM), a scalar averaged over all images.

    L1 is the mean absolute error over all elements; SSIM uses the Inria training convention
    (``padding="same"``, 11x11 window, sigma 1.5, data range 1).
    """
    l1 = (render - target).abs().mean()
    return (1.0 - ssim_weight) * l1 + ssim_weight * (1.0 - ssim(render, target, padding="same").mean())
