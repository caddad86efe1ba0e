"""Small image operations shared by losses, pseudo-labels and metrics (plain torch, no torchvision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> Tensor:
    """-> (size,) normalised 1D Gaussian."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: Tensor, win: Tensor) -> Tensor:
    """Separable 'valid' Gaussian filter per channel. x: (N, C, H, W) -> (N, C, H-k+1, W-k+1)."""
    c = x.shape[1]
    k = win.numel()
    x = F.conv2d(x, win.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, win.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim_map(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0,
             same_size: bool = True) -> Tensor:
    """Per-pixel SSIM (Wang et al. 2004, Gaussian window), averaged over channels.

    a, b: (N, C, H, W) in [0, data_range] -> (N, 1, H, W) when ``same_size`` (reflect-padded), else the 'valid'
    map (N, 1, H-window+1, W-window+1), which is what scikit-image averages with ``gaussian_weights=True``.
    """
    if a.shape != b.shape:
        raise ValueError(f"ssim_map: shapes differ {tuple(a.shape)} vs {tuple(b.shape)}")
    win = gaussian_window(window, sigma, a.dtype, a.device)
    if same_size:
        pad = window // 2
        a = F.pad(a, (pad, pad, pad, pad), mode="reflect")
        b = F.pad(b, (pad, pad, pad, pad), mode="reflect")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _blur(a, win), _blur(b, win)
    # Sample (unbiased) covariance, as scikit-image uses by default.
    n = float(window * window)
    cov_norm = n / (n - 1.0)
    var_a = cov_norm * (_blur(a * a, win) - mu_a**2)
    var_b = cov_norm * (_blur(b * b, win) - mu_b**2)
    cov = cov_norm * (_blur(a * b, win) - mu_a * mu_b)
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean(dim=1, keepdim=True)


def psnr(a: Tensor, b: Tensor, mask: Tensor | None = None, eps: float = 1e-10) -> Tensor:
    """PSNR in dB for images in [0, 1]. a, b: (N, C, H, W); mask: (N, 1, H, W) weights (1 = counted) -> (N,)."""
    err = (a - b) ** 2
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        w = mask.expand_as(err)
        mse = (err * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(eps)
    return -10.0 * torch.log10(mse.clamp_min(eps))


def resize_images(x: Tensor, height: int, width: int, mode: str = "bilinear") -> Tensor:
    """x: (N, C, H, W) -> (N, C, height, width); antialiased when shrinking."""
    if x.shape[-2:] == (height, width):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=(height, width), mode="nearest")
    return F.interpolate(x, size=(height, width), mode=mode, align_corners=False, antialias=True)
