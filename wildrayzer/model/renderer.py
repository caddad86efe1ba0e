"""Renderer: target Plücker tokens attend jointly with the scene latents -> RGB; each target decoded on its own."""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from ..nn import PatchEmbed, Transformer, init_weights, unpatchify


class Renderer(nn.Module):
    """Targets are folded into the batch, so a target never sees another target and cost is linear in their count."""

    def __init__(self, patch_size: int, dim: int, heads: int, depth: int, mlp_ratio: float = 4.0,
                 qk_norm: bool = True):
        super().__init__()
        self.patch = patch_size
        self.plucker_embed = PatchEmbed(6, dim, patch_size)
        self.input_norm = nn.LayerNorm(dim)
        self.transformer = Transformer(dim, heads, depth, mlp_ratio, qk_norm)
        self.head = nn.Linear(dim, patch_size * patch_size * 3)
        self.head.apply(init_weights)

    def forward(self, scene_tokens: Tensor, plucker: Tensor) -> Tensor:
        """scene_tokens: (B, L, D), plucker: (B, T, 6, H, W) -> RGB (B, T, 3, H, W) in [0, 1]."""
        b, t, _, h, w = plucker.shape
        num_latents = scene_tokens.shape[1]
        query = rearrange(self.input_norm(self.plucker_embed(plucker)), "b t n d -> (b t) n d")
        latents = repeat(scene_tokens, "b l d -> (b t) l d", t=t)
        x = self.transformer(torch.cat([latents, query], dim=1))[:, num_latents:]
        rgb = self.head(x).float()  # (B*T, N, p*p*3)
        rgb = unpatchify(rearrange(rgb, "(b t) n c -> b t n c", b=b, t=t), self.patch, h, w)
        return torch.sigmoid(rgb)
