"""Per-scene images for the report: PNG writing, colormaps, motion-mask overlays and error maps.

Tensors are channel-first ``(C, H, W)`` (or ``(H, W)``) floats in [0, 1]; numpy arrays are channel-last
``(H, W, C)`` (or ``(H, W)``), float in [0, 1] or uint8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

ERROR_VMAX = 0.5  # default error-map scale: mean |render - GT| of 0.5 is the top colour, the same for every scene


def to_uint8(img: Tensor | np.ndarray) -> np.ndarray:
    """Tensor (C, H, W) / (H, W) or array (H, W, C) / (H, W) -> uint8 (H, W, 3) or (H, W); floats clipped to [0, 1]."""
    if isinstance(img, Tensor):
        t = img.detach().cpu()
        if t.dim() == 3:
            t = t.permute(1, 2, 0)
        arr = t.float().numpy() if t.dtype != torch.uint8 else t.numpy()
    else:
        arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"to_uint8: expected an RGB(A) or grey image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    return (np.clip(np.nan_to_num(arr.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(path: str | Path, img: Tensor | np.ndarray) -> Path:
    """Write ``img`` (see :func:`to_uint8`) as an 8-bit PNG, creating parent folders. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img)).save(path, format="PNG")
    return path


def colorize(x: Tensor, cmap: str = "inferno", vmin: float = 0.0, vmax: float | None = None) -> Tensor:
    """Scalar map x: (H, W) -> (3, H, W) RGB via a matplotlib colormap; ``vmax`` None uses the map's maximum."""
    import matplotlib

    x = x.detach().cpu().double()
    if x.dim() == 3 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 2:
        raise ValueError(f"colorize: expected (H, W), got {tuple(x.shape)}")
    hi = float(x.max()) if vmax is None else float(vmax)
    norm = ((x - vmin) / max(hi - vmin, 1e-12)).clamp(0, 1).nan_to_num(0.0)
    rgba = matplotlib.colormaps[cmap](norm.numpy())  # (H, W, 4) float
    return torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float()


def mask_overlay(image: Tensor, mask: Tensor, color: tuple[float, float, float] = (1.0, 0.0, 0.0),
                 alpha: float = 0.5) -> Tensor:
    """Red tint where moving. image: (3, H, W) in [0, 1]; mask: (1, H, W) or (H, W) in [0, 1] -> (3, H, W).

    Each pixel becomes ``(1 - alpha * m) * image + alpha * m * color``; soft masks give a proportional tint.
    """
    m = mask.detach().float().cpu()
    m = m[0] if m.dim() == 3 else m
    img = image.detach().float().cpu()
    if img.dim() != 3 or img.shape[0] != 3 or m.shape != img.shape[-2:]:
        raise ValueError(f"mask_overlay: image (3, H, W) and mask (1, H, W) expected, got {tuple(image.shape)} "
                         f"and {tuple(mask.shape)}")
    w = alpha * m.clamp(0, 1)[None]
    tint = torch.tensor(color, dtype=img.dtype).view(3, 1, 1)
    return (1 - w) * img + w * tint


def error_map(pred: Tensor, gt: Tensor, vmax: float = ERROR_VMAX, cmap: str = "inferno") -> Tensor:
    """Heatmap of the per-pixel mean absolute error. pred, gt: (3, H, W) in [0, 1] -> (3, H, W) RGB.

    The scale is fixed (``vmax``, default :data:`ERROR_VMAX`) so that maps are comparable across scenes.
    """
    if pred.shape != gt.shape or pred.dim() != 3:
        raise ValueError(f"error_map: expected two (3, H, W) images, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    err = (pred.detach().float() - gt.detach().float()).abs().mean(0)  # (H, W)
    return colorize(err, cmap=cmap, vmin=0.0, vmax=vmax)
