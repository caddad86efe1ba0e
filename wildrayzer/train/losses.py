"""Training losses: photometric (MSE + VGG perceptual), masked variants, motion-mask BCE with per-sample validity.

Every loss returns ``(scalar, logs)`` where ``logs`` maps a name to a detached float tensor for logging. Masks use
1 = counted; dynamic (moving) pixels are excluded by passing ``1 - motion_mask``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..image_ops import psnr
from .perceptual import PerceptualLoss, flatten_views


def mse_loss(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """pred, target: (B, T, 3, H, W); weight: (B, T, 1, H, W) (1 = counted) or None -> scalar masked mean."""
    err = (pred.float() - target.float()) ** 2
    if weight is None:
        return err.mean()
    w = weight.float().expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1.0)


def rendering_loss(pred: Tensor, target: Tensor, *, perceptual: PerceptualLoss | None = None,
                   perceptual_weight: float = 0.0, weight: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """MSE + ``perceptual_weight`` x perceptual (when a VGG is given), optionally masked.

    pred, target: (B, T, 3, H, W) in [0, 1]; weight: (B, T, 1, H, W) with 1 = static (counted) or None.
    """
    mse = mse_loss(pred, target, weight)
    loss = mse
    with torch.no_grad():
        w = None if weight is None else flatten_views(weight.float())
        logs = {"mse": mse.detach(), "psnr": psnr(flatten_views(pred.float()).clamp(0, 1),
                                                  flatten_views(target.float()), w).mean()}
    if perceptual is not None and perceptual_weight > 0:
        w = None if weight is None else flatten_views(weight)
        perc = perceptual(flatten_views(pred), flatten_views(target), w)
        loss = loss + perceptual_weight * perc
        logs["perceptual"] = perc.detach()
    logs["render_loss"] = loss.detach()
    return loss, logs


def mask_bce_loss(logits: Tensor, target: Tensor, valid: Tensor | None = None,
                  pos_weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-pixel BCE of motion logits against (pseudo-)masks, averaged over valid samples only.

    logits: (B, V, 1, H, W); target: (B, V, 1, H, W) in [0, 1]; valid: (B, V) bool (e.g. the PSNR filter) or None.
    ``pos_weight`` > 1 up-weights moving pixels (they are a small fraction of each image).
    With no valid sample the loss is an exact zero that still depends on ``logits`` (so DDP sees the graph).
    """
    pw = None if pos_weight == 1.0 else logits.new_tensor(float(pos_weight), dtype=torch.float32)
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none", pos_weight=pw)
    per_sample = per_pixel.flatten(2).mean(-1)  # (B, V)
    if valid is None:
        valid = torch.ones_like(per_sample, dtype=torch.bool)
    v = valid.to(per_sample.dtype)
    n_valid = v.sum()
    loss = (per_sample * v).sum() / n_valid.clamp_min(1.0)
    logs = {"mask_bce": loss.detach(), "mask_valid_frac": (n_valid / v.numel()).detach()}
    return loss, logs
