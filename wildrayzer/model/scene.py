"""Scene encoder: context image + Plücker tokens and learnable latent tokens -> scene latents."""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from ..nn import PatchEmbed, Transformer


class SceneEncoder(nn.Module):
    """Image tokens and Plücker-ray tokens of the context views are embedded separately (so that image tokens can be
    replaced by the noise token before encoding), summed, and encoded jointly with ``num_latents`` learnable latent
    tokens; the latents after the transformer are the scene representation."""

    def __init__(self, patch_size: int, dim: int, heads: int, depth: int, num_latents: int,
                 mlp_ratio: float = 4.0, qk_norm: bool = True):
        super().__init__()
        self.image_embed = PatchEmbed(3, dim, patch_size)
        self.plucker_embed = PatchEmbed(6, dim, patch_size)
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.input_norm = nn.LayerNorm(dim)
        self.transformer = Transformer(dim, heads, depth, mlp_ratio, qk_norm)

    def embed(self, images: Tensor, plucker: Tensor) -> tuple[Tensor, Tensor]:
        """images: (B, Vc, 3, H, W) in [0, 1], plucker: (B, Vc, 6, H, W) -> image and Plücker tokens (B, Vc, N, D)."""
        return self.image_embed(images * 2.0 - 1.0), self.plucker_embed(plucker)

    def forward(self, image_tokens: Tensor, plucker_tokens: Tensor) -> Tensor:
        """image_tokens, plucker_tokens: (B, Vc, N, D) -> scene tokens (B, L, D)."""
        b = image_tokens.shape[0]
        ctx = rearrange(image_tokens + plucker_tokens, "b v n d -> b (v n) d")
        x = torch.cat([repeat(self.latents, "l d -> b l d", b=b), self.input_norm(ctx)], dim=1)
        return self.transformer(x)[:, : self.latents.shape[0]]
