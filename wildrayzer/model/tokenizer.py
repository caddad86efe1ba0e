"""Image tokenizer shared by the camera estimator, the scene encoder and the motion head.

``2 * img - 1`` patches (flattened as ``(ph pw c)``) -> one bias-free Linear, plus an MLP (Linear-SiLU-Linear) of
[2-D sin-cos of the patch position (D/2) | 1-D sin-cos of the view index (D/2)]. The view index is what ties a
checkpoint to the order of its views: view 0 is the canonical camera.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn import PatchEmbed, mlp2, sincos_1d, sincos_2d


class ImageTokenizer(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        if dim % 4:
            raise ValueError(f"model.dim={dim} must be divisible by 4 (half of it is a 2-D sin-cos embedding)")
        self.patch = patch_size
        self.dim = dim
        self.embed = PatchEmbed(3, dim, patch_size)
        self.pe_mlp = mlp2(dim, dim)

    def position_embedding(self, views: int, grid_h: int, grid_w: int, device) -> Tensor:
        """-> (V, grid_h * grid_w, D): the MLP of [spatial sin-cos | view-index sin-cos] for every token."""
        n = grid_h * grid_w
        spatial = sincos_2d(self.dim // 2, grid_h, grid_w, device=device)  # (N, D/2)
        temporal = sincos_1d(torch.arange(views, device=device), self.dim // 2)  # (V, D/2)
        pe = torch.cat([spatial[None].expand(views, n, -1), temporal[:, None].expand(views, n, -1)], dim=-1)
        return self.pe_mlp(pe.to(self.pe_mlp[0].weight.dtype))

    def forward(self, images: Tensor) -> Tensor:
        """images: (B, V, 3, H, W) in [0, 1] -> tokens (B, V, N, D), N = (H/p)(W/p)."""
        _, v, _, h, w = images.shape
        tokens = self.embed(images * 2.0 - 1.0)
        return tokens + self.position_embedding(v, h // self.patch, w // self.patch, images.device).to(tokens.dtype)
