"""The composition root: camera estimator, optional motion-mask estimator, MAE token masking, scene encoder, renderer.

Pure: no I/O, no device choice, no loss. ``forward`` returns a dict of predictions (see docs/CONTRACTS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..errors import ConfigError
from ..geometry import plucker_rays_chw
from .camera import CameraEstimator
from .renderer import Renderer
from .scene import SceneEncoder


class WildRayZer(nn.Module):
    """RayZer (camera estimator + scene encoder + renderer) plus WildRayZer's motion masks and noise-token masking.

    ``model_cfg`` is the ``model`` section of the config; ``semantic_dim`` the channel count of the semantic
    features (only used when ``model_cfg.use_motion_mask``; 0 = no semantic input).
    """

    def __init__(self, model_cfg, semantic_dim: int = 0):
        super().__init__()
        m = model_cfg
        self.cfg = m
        self.num_context = m.num_context_views
        self.num_views = m.num_context_views + m.num_target_views
        self.patch = m.patch_size
        common = dict(heads=m.heads, mlp_ratio=m.mlp_ratio, qk_norm=m.qk_norm)
        self.camera = CameraEstimator(m.image_size, m.patch_size, m.dim, depth=m.camera_layers,
                                      num_views=self.num_views, focal_offset=m.focal_offset,
                                      pose_input=m.camera_pose_input, **common)
        self.scene = SceneEncoder(m.patch_size, m.dim, depth=m.scene_layers, num_latents=m.num_latents, **common)
        self.renderer = Renderer(m.patch_size, m.dim, depth=m.renderer_layers, **common)
        # Always registered, so it is in every checkpoint whether or not masking is on.
        self.noise_token = nn.Parameter(torch.randn(m.dim) * 0.02)
        self.motion = None
        if m.use_motion_mask:
            try:
                from .motion import MotionEstimator
            except ModuleNotFoundError as e:
                if e.name != f"{__package__}.motion":
                    raise
                raise ConfigError("model.use_motion_mask=true but wildrayzer/model/motion.py is not available") from e
            self.motion = MotionEstimator(m, semantic_dim)
        self.set_activation_checkpointing(m.activation_checkpointing)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        for mod in self.modules():
            if hasattr(mod, "activation_checkpointing"):
                mod.activation_checkpointing = enabled

    def _check_views(self, v: int, num_context: int) -> None:
        if num_context != self.num_context or v not in (self.num_context, self.num_views):
            raise ConfigError(
                f"this model was built for model.num_context_views={self.num_context} + model.num_target_views="
                f"{self.num_views - self.num_context} views; got {num_context} + {v - num_context}. Pass that many "
                "views (or the context views alone) or use a checkpoint trained for your view count")

    def plucker(self, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int) -> Tensor:
        """c2w: (B, V, 4, 4), fxfycxcy: (B, V, 4) -> Plücker maps (B, V, 6, H, W), computed in fp32."""
        with torch.autocast(c2w.device.type, enabled=False):
            return plucker_rays_chw(c2w.float(), fxfycxcy.float(), height, width)

    def token_motion_fraction(self, probs: Tensor) -> Tensor:
        """probs: (B, Vc, 1, H, W) per-pixel motion probability -> (B, Vc, N) fraction of each patch's pixels that are
        moving (probability > 0.5). Binarising first matters: averaging soft probabilities lets a diffuse background
        probability (e.g. 0.15 everywhere from a positive-weighted BCE) cross the threshold in every patch."""
        b = probs.shape[0]
        moving = (probs.float() > 0.5).float()
        pooled = F.avg_pool2d(rearrange(moving, "b v c h w -> (b v) c h w"), self.patch)
        return rearrange(pooled, "(b v) 1 h w -> b v (h w)", b=b)

    def forward(self, images: Tensor, num_context: int, *, motion_probs: Tensor | None = None,
                semantic_feats: Tensor | None = None, render_targets: bool = True, motion_all_views: bool = False,
                apply_mae: bool = True) -> dict:
        """images: (B, V, 3, H, W) in [0, 1], context views first, V = num_context + num_target, or V = num_context
        (cameras, masks and scene only; ``renders`` is None).

        motion_probs: (B, Vc, 1, H, W) or None, used for token masking instead of the model's own masks.
        semantic_feats: (B, Vm, C, h, w) or None (checked by the motion estimator), Vm = V when
        ``motion_all_views`` (masks for every view, e.g. to supervise targets in training) else Vc.
        ``render_targets=False`` skips the renderer; ``apply_mae=False`` turns noise-token masking off for this call.
        """
        b, v, _, h, w = images.shape
        self._check_views(v, num_context)
        cameras = self.camera(images)
        plucker = self.plucker(cameras["c2w"], cameras["fxfycxcy"], h, w)  # (B, V, 6, H, W)
        vm = v if (motion_all_views and self.motion is not None) else num_context
        image_tokens, plucker_tokens = self.scene.embed(images[:, :vm], plucker[:, :vm])  # (B, Vm, N, D)

        motion_logits = None
        if self.motion is not None:
            motion_logits = self.motion(semantic_feats, image_tokens, plucker_tokens, h, w)  # (B, Vm, 1, H, W)
        image_tokens, plucker_tokens = image_tokens[:, :num_context], plucker_tokens[:, :num_context]

        token_mask = None
        if self.cfg.use_mae_masking and apply_mae:
            probs = motion_probs if motion_probs is not None else (
                torch.sigmoid(motion_logits[:, :num_context].float()) if motion_logits is not None else None)
            if probs is not None:
                token_mask = self.token_motion_fraction(probs) > self.cfg.mask_token_threshold  # (B, Vc, N)
                noise = self.noise_token.to(image_tokens.dtype)
                image_tokens = torch.where(token_mask[..., None], noise, image_tokens)

        scene_tokens = self.scene(image_tokens, plucker_tokens)
        has_targets = render_targets and v > num_context
        renders = self.renderer(scene_tokens, plucker[:, num_context:]) if has_targets else None
        return {"cameras": cameras, "motion_logits": motion_logits, "token_mask": token_mask,
                "scene_tokens": scene_tokens, "renders": renders}

    def render(self, scene_tokens: Tensor, c2w: Tensor, fxfycxcy: Tensor) -> Tensor:
        """scene_tokens: (B, L, D), c2w: (B, T, 4, 4) relative to view 0, fxfycxcy: (B, T, 4) -> (B, T, 3, H, W)."""
        size = self.cfg.image_size
        return self.renderer(scene_tokens, self.plucker(c2w, fxfycxcy, size, size))
