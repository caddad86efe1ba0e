"""Transformer building blocks in the released WildRayZer layout, patchify / unpatchify, sin-cos embeddings.

Blocks (as in the authors' release, pinned by ``tests/fixtures/parity``): pre-norm LayerNorm without bias, one
bias-free ``qkv`` projection laid out as ``[q | k | v]`` with heads contiguous inside each, QK-norm = RMSNorm
(eps 1e-5) over each head, bias-free output projection, bias-free GELU MLP (ratio 4), and no final norm after a
stack. Attention runs through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA).
"""

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


class RMSNorm(nn.Module):
    """RMS normalisation over the last axis, computed in fp32 and cast back before the gain (as the release does)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., dim) -> (..., dim)."""
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight.type_as(x)


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """q: (B, H, Nq, Dh), k, v: (B, H, Nk, Dh) -> (B, H, Nq, Dh): ``F.scaled_dot_product_attention``, except that on
    a CPU, bf16 / fp16 inputs (autocast) are attended in fp32 and the result cast back: PyTorch's CPU flash kernel is
    several times slower in bf16 than in fp32 (backward above all; benchmarks/RESULTS.md v2.5), while the
    projections around it keep the bf16 matmul speed-up."""
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=False)
        self.use_sdpa = True

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, D) -> (B, N, D)."""
        q, k, v = rearrange(self.qkv(x), "b n (t h d) -> t b h n d", t=3, h=self.heads)
        q, k = self.q_norm(q), self.k_norm(k)
        out = sdpa(q, k, v) if self.use_sdpa else naive_attention(q, k, v)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block, no biases anywhere."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, bias=False)
        self.attn = Attention(dim, heads, qk_norm)
        self.norm2 = nn.LayerNorm(dim, bias=False)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, D) -> (B, N, D)."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of blocks (no final norm). Initialisation (``block_init``): ``release`` = block ``i``'s linear layers
    at std 0.02 / sqrt(2 (i + 1)) (the release's depth init); ``gpt2`` = std 0.02, with the residual output
    projections at 0.02 / sqrt(2 depth)."""

    def __init__(self, dim: int, heads: int, depth: int, mlp_ratio: float = 4.0, qk_norm: bool = True,
                 block_init: str = "release"):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, qk_norm) for _ in range(depth)])
        self.activation_checkpointing = False
        if block_init not in ("release", "gpt2"):
            raise ValueError(f"block_init must be release or gpt2; got {block_init!r}")
        for i, blk in enumerate(self.blocks):
            std = 0.02 / math.sqrt(2 * (i + 1)) if block_init == "release" else 0.02
            blk.apply(lambda m, std=std: init_weights(m, std))
            if block_init == "gpt2":
                for out in (blk.attn.proj, blk.mlp.fc2):
                    nn.init.normal_(out.weight, std=0.02 / math.sqrt(2 * depth))

    def forward(self, x: Tensor, return_layers: bool = False) -> Tensor | list[Tensor]:
        """x: (B, N, D) -> (B, N, D), or the output of every block when ``return_layers``."""
        outs = []
        for blk in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
            outs.append(x)
        return outs if return_layers else x


class AttentionPool(nn.Module):
    """One learned query attends over a set of tokens (multi-head, QK-norm, no biases): (B, N, D) -> (B, D).
    The output projection starts at zero, so a freshly added pool leaves its host's output unchanged."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.query = nn.Parameter(torch.randn(dim) * 0.02)
        self.norm = nn.LayerNorm(dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.q_norm, self.k_norm = RMSNorm(dim // heads), RMSNorm(dim // heads)
        self.proj = nn.Linear(dim, dim, bias=False)
        init_weights(self.kv)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, D) -> (B, D)."""
        k, v = rearrange(self.kv(self.norm(x)), "b n (t h d) -> t b h n d", t=2, h=self.heads)
        q = rearrange(self.query.to(x.dtype), "(h d) -> 1 h 1 d", h=self.heads).expand(x.shape[0], -1, -1, -1)
        out = sdpa(self.q_norm(q), self.k_norm(k), v)  # (B, H, 1, Dh)
        return self.proj(rearrange(out, "b h 1 d -> b (h d)"))


def init_weights(m: nn.Module, std: float = 0.02) -> None:
    """Normal(0, std) linear weights, zero biases; norms at (1, 0). Convolutions keep PyTorch's default."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, RMSNorm)):
        if m.weight is not None:
            nn.init.ones_(m.weight)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)


def patchify(x: Tensor, patch: int) -> Tensor:
    """x: (B, V, C, H, W) -> (B, V, (H/p)(W/p), p*p*C), each patch flattened as (ph pw c)."""
    return rearrange(x, "b v c (h p1) (w p2) -> b v (h w) (p1 p2 c)", p1=patch, p2=patch)


def unpatchify(tokens: Tensor, patch: int, height: int, width: int) -> Tensor:
    """tokens: (B, V, (H/p)(W/p), p*p*C) -> (B, V, C, H, W)."""
    return rearrange(tokens, "b v (h w) (p1 p2 c) -> b v c (h p1) (w p2)", h=height // patch, w=width // patch,
                     p1=patch, p2=patch)


class PatchEmbed(nn.Module):
    """Bias-free linear embedding of non-overlapping patches. (B, V, C, H, W) -> (B, V, N, D)."""

    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(in_channels * patch * patch, dim, bias=False)
        self.apply(init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, V, C, H, W) -> (B, V, (H/p)(W/p), D)."""
        if x.shape[-1] % self.patch or x.shape[-2] % self.patch:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch}")
        return self.proj(patchify(x, self.patch))


def sincos_1d(pos: Tensor, dim: int) -> Tensor:
    """pos: (N,) positions -> (N, dim) = [sin(pos * w_k) | cos(pos * w_k)], w_k = 10000^(-k / (dim/2))."""
    if dim % 2:
        raise ValueError(f"a 1-D sin-cos embedding needs an even width; got {dim}")
    half = dim // 2
    freq = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float32, device=pos.device) / half))
    angle = pos.float()[:, None] * freq
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


def sincos_2d(dim: int, grid_h: int, grid_w: int, device=None) -> Tensor:
    """-> (grid_h * grid_w, dim), tokens row-major: [1-D embedding of the column (dim/2) | of the row (dim/2)]."""
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos embedding needs a width divisible by 4; got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_h, device=device), torch.arange(grid_w, device=device),
                                indexing="ij")
    return torch.cat([sincos_1d(cols.reshape(-1), dim // 2), sincos_1d(rows.reshape(-1), dim // 2)], dim=-1)


def mlp2(d_in: int, d_out: int, act: type[nn.Module] = nn.SiLU, norm: bool = False, hidden: int | None = None,
         ) -> nn.Sequential:
    """[LayerNorm (no bias)] -> Linear -> act -> Linear, with biases (the release's embedder / fusion MLPs)."""
    hidden = d_out if hidden is None else hidden
    layers = [nn.LayerNorm(d_in, bias=False)] if norm else []
    mlp = nn.Sequential(*layers, nn.Linear(d_in, hidden), act(), nn.Linear(hidden, d_out))
    mlp.apply(init_weights)
    return mlp
