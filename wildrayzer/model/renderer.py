"""Renderer: [target Plücker tokens, scene latents] -> LayerNorm -> transformer -> LayerNorm + Linear + sigmoid.

Targets are folded into the batch, so a target never sees another target and cost is linear in their count. The
renderer has its own Plücker tokenizer (the release's second one), used for targets and for re-rendering inputs.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from ..nn import PatchEmbed, Transformer, init_weights, unpatchify


class Renderer(nn.Module):
    def __init__(self, patch_size: int, dim: int, heads: int, depth: int, mlp_ratio: float = 4.0,
                 qk_norm: bool = True, block_init: str = "release"):
        super().__init__()
        self.patch = patch_size
        self.plucker_embed = PatchEmbed(6, dim, patch_size)
        self.input_norm = nn.LayerNorm(dim, bias=False)
        self.transformer = Transformer(dim, heads, depth, mlp_ratio, qk_norm, block_init)
        self.head_norm = nn.LayerNorm(dim, bias=False)
        self.head = nn.Linear(dim, patch_size * patch_size * 3, bias=False)
        self.head.apply(init_weights)

    def forward(self, scene_tokens: Tensor, plucker: Tensor) -> Tensor:
        """scene_tokens: (B, L, D), plucker: (B, T, 6, H, W) -> RGB (B, T, 3, H, W) in [0, 1]."""
        b, t, _, h, w = plucker.shape
        query = rearrange(self.plucker_embed(plucker), "b t n d -> (b t) n d")
        n = query.shape[1]
        latents = repeat(scene_tokens, "b l d -> (b t) l d", t=t).to(query.dtype)
        x = self.transformer(self.input_norm(torch.cat([query, latents], dim=1)))[:, :n]
        rgb = self.head(self.head_norm(x)).float()  # (B*T, N, p*p*3)
        rgb = unpatchify(rearrange(rgb, "(b t) n c -> b t n c", b=b, t=t), self.patch, h, w)
        return torch.sigmoid(rgb)
