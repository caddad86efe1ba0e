"""Motion-mask head (the release's structure): per view, semantic + image + Plücker tokens -> logit per pixel.

Each modality gets LayerNorm + Linear to ``dim``; the three are concatenated and fused by an MLP (LayerNorm, Linear,
GELU, Linear); ``depth`` transformer blocks run over the tokens of one view (views are folded into the batch: no
attention across views); a readout (LayerNorm + Linear) and an upsampling decoder bring the token grid to the
image: a 3x3 refine at the grid (D/2 channels), then log2(patch) steps of x2 bilinear upsampling + 1x1 conv that
halve the channels, each followed by GroupNorm/GELU refinement, and a conv head to one logit per pixel.

The last bias starts at logit(0.02), so an untrained head predicts "static" for every pixel and masks no token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..image_ops import resize_images
from ..nn import Transformer, init_weights, mlp2

INITIAL_MOTION_PROB = 0.02
_REFINE_GROUPS = (32, 32, 16, 8)  # GroupNorm groups of the refinements after each upsampling step (release values)


def _groups(channels: int, prefer: int) -> int:
    return math.gcd(channels, prefer) or 1


def decoder_steps(patch_size: int) -> int:
    """Number of x2 upsampling steps from the token grid to the image: log2(patch)."""
    steps = int(round(math.log2(patch_size))) if patch_size > 0 else -1
    if steps < 1 or 2 ** steps != patch_size:
        raise ValueError(f"the motion head's decoder needs a power-of-two patch size; got {patch_size}")
    return steps


class Up2x(nn.Module):
    """x2 bilinear upsampling, 1x1 conv to ``out_ch``, then GroupNorm-GELU-conv3x3-GroupNorm-GELU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        g = _groups(out_ch, 32)
        self.conv = nn.Conv2d(in_ch, out_ch, 1)
        self.refine = nn.Sequential(nn.GroupNorm(g, out_ch), nn.GELU(), nn.Conv2d(out_ch, out_ch, 3, padding=1),
                                    nn.GroupNorm(g, out_ch), nn.GELU())

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, in_ch, h, w) -> (N, out_ch, 2h, 2w)."""
        return self.refine(self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)))


def _refine(ch: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.GroupNorm(_groups(ch, groups), ch), nn.GELU())


class MaskDecoder(nn.Module):
    """Token grid (N, D, gh, gw) -> logits (N, 1, gh * 2^steps, gw * 2^steps); ``steps`` 0 = log2(patch), i.e. one
    logit per pixel. (The release always takes 4 steps: at patch 16 that is the same; at other patches its masks are
    not image-sized.)"""

    def __init__(self, dim: int, patch_size: int, steps: int = 0):
        super().__init__()
        steps = steps or decoder_steps(patch_size)
        if dim % 2 ** (steps + 1):
            raise ValueError(f"model.dim={dim} must be divisible by {2 ** (steps + 1)} for the motion decoder's "
                             f"{steps} upsampling steps")
        ch = [dim // 2 ** (k + 1) for k in range(steps + 1)]  # D/2 at the grid, halved at each step
        self.grid_refine = nn.Sequential(nn.Conv2d(dim, ch[0], 3, padding=1), nn.GroupNorm(_groups(ch[0], 32), ch[0]),
                                         nn.GELU(), nn.Conv2d(ch[0], ch[0], 3, padding=1))
        self.ups = nn.ModuleList([Up2x(ch[k], ch[k + 1]) for k in range(steps)])
        self.refines = nn.ModuleList([_refine(ch[k + 1], _REFINE_GROUPS[min(k, len(_REFINE_GROUPS) - 1)])
                                      for k in range(steps)])
        self.head = nn.Sequential(nn.Conv2d(ch[-1], ch[-1], 3, padding=1), nn.GELU(), nn.Conv2d(ch[-1], 1, 1))
        nn.init.normal_(self.head[-1].weight, std=0.01)
        nn.init.constant_(self.head[-1].bias, math.log(INITIAL_MOTION_PROB / (1 - INITIAL_MOTION_PROB)))

    def forward(self, x: Tensor) -> Tensor:
        x = self.grid_refine(x)
        for up, refine in zip(self.ups, self.refines):
            x = refine(up(x))
        return self.head(x)


class MotionEstimator(nn.Module):
    """Per-pixel motion logits of any views from semantic features, image tokens and Plücker tokens.

    ``semantic_dim`` is the channel count of the semantic features (0 = no semantic modality: ``semantic_feats``
    must then be None or have 0 channels).
    """

    def __init__(self, dim: int, heads: int, depth: int, patch_size: int, semantic_dim: int,
                 mlp_ratio: float = 4.0, qk_norm: bool = True, upsample_steps: int = 0, block_init: str = "release"):
        super().__init__()
        self.dim = dim
        self.patch = patch_size
        self.semantic_dim = int(semantic_dim)
        self.semantic_proj = self._proj(self.semantic_dim, dim) if self.semantic_dim > 0 else None
        self.image_proj = self._proj(dim, dim)
        self.plucker_proj = self._proj(dim, dim)
        n_mod = 3 if self.semantic_proj is not None else 2
        self.fuse = mlp2(n_mod * dim, dim, act=nn.GELU, norm=True)
        self.transformer = Transformer(dim, heads, depth, mlp_ratio, qk_norm, block_init)
        self.readout = self._proj(dim, dim)
        self.decoder = MaskDecoder(dim, patch_size, upsample_steps)

    @staticmethod
    def _proj(d_in: int, d_out: int) -> nn.Sequential:
        proj = nn.Sequential(nn.LayerNorm(d_in, bias=False), nn.Linear(d_in, d_out))
        proj.apply(init_weights)
        return proj

    def _semantic_tokens(self, semantic_feats: Tensor, gh: int, gw: int) -> Tensor:
        """semantic_feats: (B, V, C, h, w) -> (B*V, gh*gw, C), resampled (bilinear, antialiased) to the token grid."""
        x = resize_images(rearrange(semantic_feats, "b v c h w -> (b v) c h w"), gh, gw)
        return rearrange(x, "n c h w -> n (h w) c").to(self.semantic_proj[1].weight.dtype)

    def forward(self, semantic_feats: Tensor | None, image_tokens: Tensor, plucker_tokens: Tensor,
                height: int, width: int) -> Tensor:
        """semantic_feats: (B, V, C, h, w) or None when semantic_dim == 0; image_tokens, plucker_tokens:
        (B, V, N, D) with N = (height/p)(width/p) -> motion logits (B, V, 1, height, width) (at another resolution
        only when built with ``upsample_steps`` != log2(patch), as a converted release checkpoint at patch != 16)."""
        b, v, n, d = image_tokens.shape
        gh, gw = height // self.patch, width // self.patch
        if gh * gw != n or plucker_tokens.shape != image_tokens.shape or d != self.dim:
            raise ValueError(f"MotionEstimator: tokens {tuple(image_tokens.shape)} / {tuple(plucker_tokens.shape)} "
                             f"do not match a {height}x{width} image with patch {self.patch} and dim {self.dim}")
        parts = [self.image_proj(image_tokens.flatten(0, 1)), self.plucker_proj(plucker_tokens.flatten(0, 1))]
        if self.semantic_proj is not None:
            if semantic_feats is None or semantic_feats.dim() != 5 or semantic_feats.shape[:3] != (b, v,
                                                                                                  self.semantic_dim):
                got = None if semantic_feats is None else tuple(semantic_feats.shape)
                raise ValueError(f"MotionEstimator expects semantic_feats (B={b}, V={v}, C={self.semantic_dim}, h, w);"
                                 f" got {got}")
            parts.insert(0, self.semantic_proj(self._semantic_tokens(semantic_feats, gh, gw)))
        elif semantic_feats is not None and semantic_feats.shape[2] != 0:
            raise ValueError("MotionEstimator was built with semantic_dim=0 but got semantic features")
        x = self.transformer(self.fuse(torch.cat(parts, dim=-1)))  # (B*V, N, D)
        x = rearrange(self.readout(x), "n (h w) d -> n d h w", h=gh, w=gw)
        logits = self.decoder(x)  # (B*V, 1, H, W)
        return rearrange(logits, "(b v) 1 h w -> b v 1 h w", b=b)
