"""Transformer building blocks: pre-LN blocks with QK-norm and SDPA attention, patch embed / unpatchify."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def naive_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Reference softmax attention. q: (B, H, N, Dh), k/v: (B, H, M, Dh) -> (B, H, N, Dh)."""
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return scores.softmax(dim=-1) @ v


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.use_sdpa = True

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, D) -> (B, N, D)."""
        q, k, v = rearrange(self.qkv(x), "b n (t h d) -> t b h n d", t=3, h=self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        out = F.scaled_dot_product_attention(q, k, v) if self.use_sdpa else naive_attention(q, k, v)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qk_norm)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, D) -> (B, N, D)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of blocks with depth-scaled init of the residual output projections and a final LayerNorm."""

    def __init__(self, dim: int, heads: int, depth: int, mlp_ratio: float = 4.0, qk_norm: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, qk_norm) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.activation_checkpointing = False
        self.apply(init_weights)
        for blk in self.blocks:  # GPT-2 style: residual branches scaled by 1/sqrt(2 * depth)
            std = 0.02 / math.sqrt(2 * max(depth, 1))
            nn.init.normal_(blk.attn.proj.weight, std=std)
            nn.init.normal_(blk.mlp.fc2.weight, std=std)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, D) -> (B, N, D)."""
        for blk in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return self.norm(x)


def init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def patchify(x: Tensor, patch: int) -> Tensor:
    """x: (B, V, C, H, W) -> (B, V, (H/p)(W/p), p*p*C)."""
    return rearrange(x, "b v c (h p1) (w p2) -> b v (h w) (p1 p2 c)", p1=patch, p2=patch)


def unpatchify(tokens: Tensor, patch: int, height: int, width: int) -> Tensor:
    """tokens: (B, V, (H/p)(W/p), p*p*C) -> (B, V, C, H, W)."""
    return rearrange(tokens, "b v (h w) (p1 p2 c) -> b v c (h p1) (w p2)", h=height // patch, w=width // patch,
                     p1=patch, p2=patch)


class PatchEmbed(nn.Module):
    """Linear embedding of non-overlapping patches. (B, V, C, H, W) -> (B, V, N, D)."""

    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(in_channels * patch * patch, dim)
        self.apply(init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, V, C, H, W) -> (B, V, (H/p)(W/p), D)."""
        if x.shape[-1] % self.patch or x.shape[-2] % self.patch:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch}")
        return self.proj(patchify(x, self.patch))


def sincos_pos_embed_2d(dim: int, grid: int, grid_w: int | None = None) -> Tensor:
    """Fixed 2D sine-cosine position embedding on a (grid, grid_w or grid) token grid. -> (grid * grid_w, dim)."""
    if dim % 4:
        raise ValueError("dim must be divisible by 4 for a 2D sin-cos embedding")
    grid_w = grid if grid_w is None else grid_w
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64),
                            indexing="ij")
    out = [f(c.reshape(-1, 1) * omega) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    return torch.cat(out, dim=1).float()
