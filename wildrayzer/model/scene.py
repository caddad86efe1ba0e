"""Scene encoder: fused [image token | Plücker token] of the context views + learnable scene latents -> latents.

Its Plücker tokenizer also feeds the motion head (for the context views). The fusion MLP (LayerNorm, Linear, SiLU,
Linear) runs before token masking, so a masked token is replaced whole by the noise token.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from ..nn import PatchEmbed, Transformer, mlp2


class SceneEncoder(nn.Module):
    def __init__(self, patch_size: int, dim: int, heads: int, depth: int, num_latents: int,
                 mlp_ratio: float = 4.0, qk_norm: bool = True, block_init: str = "release"):
        super().__init__()
        self.plucker_embed = PatchEmbed(6, dim, patch_size)
        self.fuse = mlp2(2 * dim, dim, norm=True)
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.transformer = Transformer(dim, heads, depth, mlp_ratio, qk_norm, block_init)

    def fuse_tokens(self, image_tokens: Tensor, plucker_tokens: Tensor) -> Tensor:
        """image_tokens, plucker_tokens: (B, Vc, N, D) -> fused scene-input tokens (B, Vc, N, D)."""
        return self.fuse(torch.cat([image_tokens, plucker_tokens], dim=-1))

    def forward(self, fused_tokens: Tensor) -> Tensor:
        """fused_tokens: (B, Vc, N, D) (some possibly replaced by the noise token) -> scene latents (B, L, D)."""
        b = fused_tokens.shape[0]
        latents = repeat(self.latents, "l d -> b l d", b=b).to(fused_tokens.dtype)
        x = torch.cat([latents, rearrange(fused_tokens, "b v n d -> b (v n) d")], dim=1)
        return self.transformer(x)[:, : self.latents.shape[0]]
