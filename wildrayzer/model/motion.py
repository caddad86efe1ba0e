"""Motion-mask estimator: semantic + image + Plücker tokens -> transformer -> DPT-style decoder -> per-pixel logits.

Three modalities per input view are each linearly projected to ``model.dim`` and fused (``model.motion_fusion``:
``sum``, or ``concat`` followed by a linear layer); a learnable view embedding and a fixed 2D sin-cos position
embedding are added; ``model.motion_layers`` transformer blocks attend jointly over all views' tokens (inconsistency
across views is the motion cue). A DPT-style decoder reassembles the tokens of four depths into feature maps at
4x, 2x, 1x and 1/2x the token grid, fuses them coarse-to-fine with residual conv units, and a conv head upsamples to
full resolution. The last layer's bias starts at logit(0.02), so an untrained estimator predicts "static" (well below
``model.mask_token_threshold``) and does not mask tokens by accident.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..image_ops import resize_images
from ..nn import Transformer, init_weights, sincos_pos_embed_2d

INITIAL_MOTION_PROB = 0.02
DPT_SCALES = (4.0, 2.0, 1.0, 0.5)  # resampling of the four tapped depths relative to the token grid


def tap_layers(depth: int, taps: int = 4) -> list[int]:
    """Indices of the blocks whose outputs feed the decoder: evenly spaced, the last block always included."""
    if depth < 1:
        raise ValueError("model.motion_layers must be >= 1")
    return [max(0, (depth * (i + 1)) // taps - 1) for i in range(taps)]


class ResidualConvUnit(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, ch, h, w) -> (N, ch, h, w)."""
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Reassemble(nn.Module):
    """Tokens of one depth -> a feature map at ``scale`` x the token grid."""

    def __init__(self, dim: int, ch: int, scale: float, norm: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()  # the deepest tap is normed by the transformer
        self.proj = nn.Conv2d(dim, ch, 1)
        if scale > 1:
            s = int(scale)
            self.resample = nn.ConvTranspose2d(ch, ch, kernel_size=s, stride=s)
        elif scale == 1:
            self.resample = nn.Conv2d(ch, ch, 3, padding=1)
        else:
            self.resample = nn.Conv2d(ch, ch, 3, stride=int(round(1 / scale)), padding=1)

    def forward(self, tokens: Tensor, gh: int, gw: int) -> Tensor:
        """tokens: (N, gh*gw, D) -> (N, ch, gh*scale, gw*scale)."""
        return self.resample(self.proj(rearrange(self.norm(tokens), "n (h w) d -> n d h w", h=gh, w=gw)))


class DPTDecoder(nn.Module):
    """Four reassembled maps fused coarse-to-fine, then a conv head upsampling to (H, W) -> one logit per pixel."""

    def __init__(self, dim: int, ch: int):
        super().__init__()
        last = len(DPT_SCALES) - 1
        self.reassemble = nn.ModuleList([Reassemble(dim, ch, s, norm=i < last) for i, s in enumerate(DPT_SCALES)])
        self.skip_units = nn.ModuleList([ResidualConvUnit(ch) for _ in DPT_SCALES])
        self.fuse_units = nn.ModuleList([ResidualConvUnit(ch) for _ in DPT_SCALES])
        hidden = max(ch // 2, 8)
        self.head_in = nn.Conv2d(ch, hidden, 3, padding=1)
        self.head_mid = nn.Conv2d(hidden, 32, 3, padding=1)
        self.head_out = nn.Conv2d(32, 1, 1)
        nn.init.normal_(self.head_out.weight, std=0.01)
        nn.init.constant_(self.head_out.bias, math.log(INITIAL_MOTION_PROB / (1 - INITIAL_MOTION_PROB)))

    def forward(self, taps: list[Tensor], gh: int, gw: int, height: int, width: int) -> Tensor:
        """taps: 4 x (N, gh*gw, D), shallow to deep (the deepest already normed) -> logits (N, 1, height, width)."""
        maps = [r(t, gh, gw) for r, t in zip(self.reassemble, taps)]
        path = self.fuse_units[-1](self.skip_units[-1](maps[-1]))
        for i in range(len(maps) - 2, -1, -1):  # coarse -> fine
            path = F.interpolate(path, size=maps[i].shape[-2:], mode="bilinear", align_corners=False)
            path = self.fuse_units[i](path + self.skip_units[i](maps[i]))
        x = self.head_in(path)
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        return self.head_out(F.relu(self.head_mid(x)))


class MotionEstimator(nn.Module):
    """Per-pixel motion logits for the input views from semantic features, image tokens and Plücker tokens.

    ``model_cfg`` is the ``model`` config section; ``semantic_dim`` the channel count of the semantic features
    (0 = no semantic modality: ``semantic_feats`` must then be None or have 0 channels). The view embedding has
    ``num_context_views + num_target_views`` rows, so the estimator runs on up to that many views.
    """

    def __init__(self, model_cfg, semantic_dim: int):
        super().__init__()
        m = model_cfg
        d = m.dim
        self.dim = d
        self.patch = m.patch_size
        self.semantic_dim = int(semantic_dim)
        self.fusion = m.motion_fusion
        if self.fusion not in ("sum", "concat"):
            raise ValueError(f"model.motion_fusion must be sum or concat; got '{self.fusion}'")
        self.max_views = m.num_context_views + m.num_target_views
        self.semantic_proj = nn.Linear(self.semantic_dim, d) if self.semantic_dim > 0 else None
        self.image_proj = nn.Linear(d, d)
        self.plucker_proj = nn.Linear(d, d)
        n_mod = 3 if self.semantic_proj is not None else 2
        self.fuse = nn.Linear(n_mod * d, d) if self.fusion == "concat" else None
        self.view_embed = nn.Parameter(torch.randn(self.max_views, d) * 0.02)
        self.apply(init_weights)
        self.transformer = Transformer(d, m.heads, m.motion_layers, m.mlp_ratio, m.qk_norm)
        self.taps = tap_layers(m.motion_layers)
        self.decoder = DPTDecoder(d, min(256, max(32, d // 2)))
        self.activation_checkpointing = False

    def _semantic_tokens(self, semantic_feats: Tensor, gh: int, gw: int) -> Tensor:
        """semantic_feats: (B, Vc, C, h, w) -> (B, Vc, gh*gw, C) resampled to the token grid."""
        b = semantic_feats.shape[0]
        x = resize_images(rearrange(semantic_feats.float(), "b v c h w -> (b v) c h w"), gh, gw)
        return rearrange(x, "(b v) c h w -> b v (h w) c", b=b).to(self.semantic_proj.weight.dtype)

    def forward(self, semantic_feats: Tensor | None, image_tokens: Tensor, plucker_tokens: Tensor,
                height: int, width: int) -> Tensor:
        """semantic_feats: (B, Vc, C, h, w) or None when semantic_dim == 0; image_tokens, plucker_tokens:
        (B, Vc, N, D) with N = (height/p)(width/p) -> motion logits (B, Vc, 1, height, width)."""
        b, v, n, d = image_tokens.shape
        gh, gw = height // self.patch, width // self.patch
        if gh * gw != n or plucker_tokens.shape != image_tokens.shape or d != self.dim:
            raise ValueError(f"MotionEstimator: tokens {tuple(image_tokens.shape)} / {tuple(plucker_tokens.shape)} "
                             f"do not match a {height}x{width} image with patch {self.patch} and dim {self.dim}")
        if v > self.max_views:
            raise ValueError(f"MotionEstimator built for at most {self.max_views} views; got {v}")
        parts = [self.image_proj(image_tokens), self.plucker_proj(plucker_tokens)]
        if self.semantic_proj is not None:
            if semantic_feats is None or semantic_feats.shape[:3] != (b, v, self.semantic_dim):
                got = None if semantic_feats is None else tuple(semantic_feats.shape)
                raise ValueError(f"MotionEstimator expects semantic_feats (B={b}, Vc={v}, C={self.semantic_dim}, h, w);"
                                 f" got {got}")
            parts.insert(0, self.semantic_proj(self._semantic_tokens(semantic_feats, gh, gw)))
        elif semantic_feats is not None and semantic_feats.shape[2] != 0:
            raise ValueError("MotionEstimator was built with semantic_dim=0 but got semantic features")
        x = torch.cat(parts, dim=-1) if self.fuse is not None else None
        x = self.fuse(x) if x is not None else sum(parts)
        pos = sincos_pos_embed_2d(d, gh, gw).to(x.device, x.dtype)
        x = x + self.view_embed[:v, None].to(x.dtype) + pos[None, None]
        x = rearrange(x, "b v n d -> b (v n) d")

        outputs = []
        use_ckpt = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for blk in self.transformer.blocks:
            x = checkpoint(blk, x, use_reentrant=False) if use_ckpt else blk(x)
            outputs.append(x)
        outputs[-1] = self.transformer.norm(outputs[-1])
        taps = [rearrange(outputs[i], "b (v n) d -> (b v) n d", v=v) for i in self.taps]
        logits = self.decoder(taps, gh, gw, height, width)
        return rearrange(logits, "(b v) 1 h w -> b v 1 h w", b=b)
