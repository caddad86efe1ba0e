"""Camera estimator: all views' patch tokens -> per-view pose relative to view 0 and one shared focal length."""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from ..geometry import fxfycxcy_from_normalized_focal, make_pose, rotation_6d_to_matrix
from ..nn import PatchEmbed, Transformer, init_weights, sincos_pos_embed_2d

# 6D representation of the identity rotation: the first two columns of I.
_IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _head(dim: int, out: int, in_dim: int | None = None) -> nn.Sequential:
    """Two-layer MLP whose last layer starts at zero, so the untrained head outputs exactly 0."""
    mlp = nn.Sequential(nn.Linear(in_dim or dim, dim), nn.GELU(), nn.Linear(dim, out))
    mlp.apply(init_weights)
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class CameraEstimator(nn.Module):
    """Transformer over the patch tokens of all V views (+ view-index and patch-position embeddings).

    Per view, the mean-pooled token (``pose_input="pooled"``) or the pair [view token, view 0's token] (``"pair"``,
    as in RayZer) predicts a 6D rotation and a translation that are *added to the identity*; view 0
    is the canonical frame and is exactly the identity. One focal length per scene comes from an MLP on view 0's
    pooled token: ``f_norm = focal_offset + mlp`` with ``fx = fy = f_norm * width`` (``focal_offset`` 1.25 ->
    43.6 degrees horizontal field of view when untrained). The principal point is the image centre.
    """

    def __init__(self, image_size: int, patch_size: int, dim: int, heads: int, depth: int, num_views: int,
                 mlp_ratio: float = 4.0, qk_norm: bool = True, focal_offset: float = 1.25,
                 pose_input: str = "pair"):
        super().__init__()
        if pose_input not in ("pooled", "pair"):
            raise ValueError(f"camera pose_input must be 'pooled' or 'pair', got {pose_input!r}")
        self.pose_input = pose_input
        self.num_views = num_views
        self.focal_offset = focal_offset
        self.patch_embed = PatchEmbed(3, dim, patch_size)
        self.view_embed = nn.Parameter(torch.randn(num_views, dim) * 0.02)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(dim, image_size // patch_size), persistent=False)
        self.transformer = Transformer(dim, heads, depth, mlp_ratio, qk_norm)
        self.pose_head = _head(dim, 9, in_dim=2 * dim if pose_input == "pair" else dim)  # 6D rotation delta + t
        self.focal_head = _head(dim, 1)
        self.register_buffer("identity_6d", torch.tensor(_IDENTITY_6D), persistent=False)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """images: (B, V, 3, H, W) in [0, 1], V <= num_views (the first V view embeddings are used)
        -> {"c2w": (B, V, 4, 4) relative to view 0, "fxfycxcy": (B, V, 4)}."""
        b, v, _, h, w = images.shape
        if not 1 <= v <= self.num_views:
            raise ValueError(f"camera estimator was built for {self.num_views} views (its view embedding), got {v}")
        tokens = self.patch_embed(images * 2.0 - 1.0)  # (B, V, N, D)
        tokens = tokens + self.view_embed[None, :v, None] + self.pos_embed[None, None]
        n = tokens.shape[2]
        x = self.transformer(rearrange(tokens, "b v n d -> b (v n) d"))
        pooled = rearrange(x, "b (v n) d -> b v n d", v=v, n=n).mean(dim=2)  # (B, V, D)
        with torch.autocast(images.device.type, enabled=False):  # pose maths in fp32
            pooled = pooled.float()
            feats = pooled[:, 1:]  # (B, V-1, D)
            if self.pose_input == "pair":
                feats = torch.cat([feats, pooled[:, :1].expand_as(feats)], dim=-1)  # (B, V-1, 2D)
            delta = self.pose_head(feats)  # (B, V-1, 9)
            rot = rotation_6d_to_matrix(delta[..., :6] + self.identity_6d)
            others = make_pose(rot, delta[..., 6:9])  # (B, V-1, 4, 4)
            first = repeat(torch.eye(4, device=images.device, dtype=others.dtype), "i j -> b 1 i j", b=b)
            c2w = torch.cat([first, others], dim=1)
            f_norm = (self.focal_offset + self.focal_head(pooled[:, 0])).clamp_min(0.05)  # (B, 1)
            fxfycxcy = fxfycxcy_from_normalized_focal(f_norm.expand(b, v), h, w)
        return {"c2w": c2w, "fxfycxcy": fxfycxcy}
