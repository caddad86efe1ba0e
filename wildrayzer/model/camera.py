"""Camera estimator: one learned camera token per view read out after a transformer over all views' image tokens.

Per view ``i > 0`` the pose head (SiLU MLP) reads [canonical (view 0) token | view ``i`` token] and predicts a 6D
rotation + a translation that are *added to the identity*; view 0 is exactly the identity. One focal length per scene
comes from view 0's token: ``f = mlp + focal_offset`` (1.25 in the release), fx = fy = f * W; the principal point is
the image centre. Camera tokens carry an MLP of the 1-D sin-cos of their view index; with ``query="own_view"`` (not in
the release) also an attention pool over their own view's image tokens, so a token does not have to find its view by
attention first. With ``shift_cue`` (not in the release) each token also adds an MLP of how its image correlates
with view 0's under whole-pixel shifts (:mod:`.shift_cue`), so the relative turn need not be found by attention.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from ..geometry import fxfycxcy_from_normalized_focal, make_pose, rotation_6d_to_matrix
from ..nn import AttentionPool, Transformer, mlp2, sincos_1d
from .shift_cue import ShiftCue

# 6D representation of the identity rotation (the first two columns of I) and a zero translation.
_IDENTITY_RT = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0)


class CameraEstimator(nn.Module):
    def __init__(self, dim: int, heads: int, depth: int, num_views: int, mlp_ratio: float = 4.0,
                 qk_norm: bool = True, block_init: str = "release", focal_offset: float = 1.25,
                 query: str = "view_index", shift_cue: bool = False):
        super().__init__()
        if query not in ("view_index", "own_view"):
            raise ValueError(f"camera query must be view_index or own_view; got {query!r}")
        self.num_views = num_views
        self.focal_offset = focal_offset
        self.cam_token = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.view_pe_mlp = mlp2(dim, dim)
        self.own_view_pool = AttentionPool(dim, heads) if query == "own_view" else None
        self.shift_cue = ShiftCue(dim) if shift_cue else None
        self.transformer = Transformer(dim, heads, depth, mlp_ratio, qk_norm, block_init)
        self.pose_head = mlp2(2 * dim, 9, hidden=dim)  # 6D rotation delta + translation
        self.focal_head = mlp2(dim, 1, hidden=dim)
        for head in (self.pose_head, self.focal_head):  # an untrained estimator predicts identity poses exactly
            nn.init.zeros_(head[-1].weight)
        self.register_buffer("identity_rt", torch.tensor(_IDENTITY_RT), persistent=False)

    def camera_tokens(self, image_tokens: Tensor, images: Tensor | None = None) -> Tensor:
        """image_tokens: (B, V, N, D), images: (B, V, 3, H, W) or None -> (B, V, D): the shared learned token plus the
        MLP of each view index's sin-cos (plus, for ``own_view``, the attention pool of that view's image tokens; with
        ``shift_cue``, the MLP of its shift profiles against view 0, which needs ``images``)."""
        b, v = image_tokens.shape[:2]
        pe = sincos_1d(torch.arange(v, device=self.cam_token.device), self.cam_token.shape[-1])
        tokens = repeat(self.cam_token + self.view_pe_mlp(pe.to(self.cam_token.dtype)), "v d -> b v d", b=b)
        tokens = tokens.to(image_tokens.dtype)
        if self.own_view_pool is not None:
            pooled = self.own_view_pool(rearrange(image_tokens, "b v n d -> (b v) n d"))
            tokens = tokens + rearrange(pooled, "(b v) d -> b v d", b=b)
        if self.shift_cue is not None:
            if images is None:
                raise ValueError("this camera estimator reads a shift cue (model.camera_shift_cue): pass the images")
            tokens = tokens + self.shift_cue(images).to(tokens.dtype)
        return tokens

    def forward(self, image_tokens: Tensor, height: int, width: int, images: Tensor | None = None,
                ) -> dict[str, Tensor]:
        """image_tokens: (B, V, N, D) from the shared tokenizer, V <= num_views; images: (B, V, 3, H, W) in [0, 1],
        needed only with ``shift_cue``
        -> {"c2w": (B, V, 4, 4) relative to view 0, "fxfycxcy": (B, V, 4) in pixels}."""
        b, v, n, _ = image_tokens.shape
        if not 1 <= v <= self.num_views:
            raise ValueError(f"camera estimator was built for {self.num_views} views, got {v}")
        cams = self.camera_tokens(image_tokens, images)
        x = self.transformer(torch.cat([cams, rearrange(image_tokens, "b v n d -> b (v n) d")], dim=1))
        cams = x[:, :v]  # (B, V, D)
        with torch.autocast(image_tokens.device.type, enabled=False):  # pose maths in fp32
            cams = cams.float()
            canonical = cams[:, :1]
            delta = self.pose_head(torch.cat([canonical.expand(b, v - 1, -1), cams[:, 1:]], dim=-1))  # (B, V-1, 9)
            rt = self.identity_rt + delta
            others = make_pose(rotation_6d_to_matrix(rt[..., :6]), rt[..., 6:9])  # (B, V-1, 4, 4)
            first = repeat(torch.eye(4, device=cams.device, dtype=others.dtype), "i j -> b 1 i j", b=b)
            c2w = torch.cat([first, others], dim=1)
            f_norm = self.focal_head(canonical[:, 0]) + self.focal_offset  # (B, 1), unclamped as in the release
            fxfycxcy = fxfycxcy_from_normalized_focal(f_norm.expand(b, v), height, width)
        return {"c2w": c2w, "fxfycxcy": fxfycxcy}
