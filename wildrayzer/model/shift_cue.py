"""Shift cue for the camera estimator (``model.camera_shift_cue``; not in the release).

Per view, how well its image matches the canonical view's (view 0) when shifted by each of ``2 * MAX_SHIFT + 1``
whole pixels along the rows and, separately, along the columns: normalised cross-correlation over the overlap of the
two grey images, area-resized to ``CUE_SIZE`` pixels a side. No parameters; an MLP of the two profiles (zero output
at first, so a fresh cue changes no prediction) is added to each view's camera token. The registration cue alone
tracks the true yaw (benchmarks/RESULTS.md v2.1: its peak correlates 0.79 with it on the 48 static test scenes, while
an estimator trained with the true rotations as its loss fitted none of it in 16-24 k samples).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import mlp2

CUE_SIZE = 64  # pixels a side the grey images are resized to before correlating
MAX_SHIFT = 16  # pixels at CUE_SIZE either way (a quarter of the image)
PROFILE = 2 * (2 * MAX_SHIFT + 1)  # values per view: the horizontal-shift then the vertical-shift profile


def _ncc(a: Tensor, b: Tensor) -> Tensor:
    """Normalised cross-correlation over the last two dims. a, b: (..., h, w) -> (...)."""
    a = a - a.mean(dim=(-2, -1), keepdim=True)
    b = b - b.mean(dim=(-2, -1), keepdim=True)
    num = (a * b).sum(dim=(-2, -1))
    return num / (a.square().sum(dim=(-2, -1)) * b.square().sum(dim=(-2, -1))).clamp_min(1e-12).sqrt()


def shift_profiles(images: Tensor) -> Tensor:
    """images: (B, V, 3, H, W) in [0, 1] -> (B, V, PROFILE): for shift s in -MAX_SHIFT..MAX_SHIFT, the correlation of
    view 0 at x with view v at x - s, horizontally (the first half) and vertically (the second), each at no shift
    along the other axis. fp32, no gradient to the images."""
    with torch.no_grad(), torch.autocast(images.device.type, enabled=False):
        b, v = images.shape[:2]
        grey = F.adaptive_avg_pool2d(images.float().mean(dim=2).flatten(0, 1), CUE_SIZE).view(b, v, CUE_SIZE,
                                                                                               CUE_SIZE)
        ref = grey[:, :1]  # (B, 1, S, S): its crop statistics once, broadcast against every view
        n = CUE_SIZE
        cols, rows = [], []
        for s in range(-MAX_SHIFT, MAX_SHIFT + 1):
            lo, hi = max(s, 0), n + min(s, 0)  # view 0's overlap; the other view's is shifted by -s
            cols.append(_ncc(ref[..., :, lo:hi], grey[..., :, lo - s:hi - s]))
            rows.append(_ncc(ref[..., lo:hi, :], grey[..., lo - s:hi - s, :]))
        return torch.cat([torch.stack(cols, dim=-1), torch.stack(rows, dim=-1)], dim=-1)


class ShiftCue(nn.Module):
    """images (B, V, 3, H, W) -> (B, V, D) to add to the camera tokens; exactly zero when fresh."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = mlp2(PROFILE, dim)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, images: Tensor) -> Tensor:
        return self.mlp(shift_profiles(images).to(self.mlp[0].weight.dtype))
