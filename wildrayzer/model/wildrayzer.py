"""The composition root, in the released WildRayZer structure: shared image tokenizer, camera estimator, motion
head, noise-token masking of the fused scene-input tokens, scene encoder, renderer.

Pure: no I/O, no device choice, no loss. ``forward`` returns a dict of predictions (see docs/CONTRACTS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..geometry import normalize_given_c2w, plucker_rays_chw
from .camera import CameraEstimator
from .motion import MotionEstimator
from .renderer import Renderer
from .scene import SceneEncoder
from .tokenizer import ImageTokenizer


class WildRayZerModel(nn.Module):
    """RayZer (camera estimator + scene encoder + renderer) plus WildRayZer's motion masks and noise-token masking.

    ``model_cfg`` is the ``model`` section of the config; ``semantic_dim`` the channel count of the semantic
    features (only used when ``model_cfg.use_motion_mask``; 0 = no semantic input).
    """

    def __init__(self, model_cfg, semantic_dim: int = 0):
        super().__init__()
        m = model_cfg
        self.num_context = m.num_context_views
        self.num_views = m.num_context_views + m.num_target_views
        self.patch = m.patch_size
        self.image_size = m.image_size
        self.use_mae_masking = bool(m.use_mae_masking)
        self.mask_token_threshold = float(m.mask_token_threshold)
        common = dict(heads=m.heads, mlp_ratio=m.mlp_ratio, qk_norm=m.qk_norm, block_init=m.block_init)
        self.tokenizer = ImageTokenizer(m.patch_size, m.dim)
        # Posed mode (model.cameras=given) takes the dataset's cameras instead: no camera estimator is built.
        self.camera = None if m.cameras == "given" else CameraEstimator(
            m.dim, depth=m.camera_layers, num_views=self.num_views, focal_offset=m.focal_offset, query=m.camera_query,
            shift_cue=m.camera_shift_cue, **common)
        self.scene = SceneEncoder(m.patch_size, m.dim, depth=m.scene_layers, num_latents=m.num_latents, **common)
        self.renderer = Renderer(m.patch_size, m.dim, depth=m.renderer_layers, **common)
        # Always registered, so it is in every checkpoint whether or not masking is on (the release omits it).
        self.noise_token = nn.Parameter(torch.randn(m.dim) * 0.02)
        self.motion = None
        self.motion_context_rays = m.motion_context_rays
        if m.use_motion_mask:
            self.motion = MotionEstimator(m.dim, m.motion_heads or m.heads, m.motion_layers, m.patch_size, semantic_dim,
                                          mlp_ratio=m.mlp_ratio, qk_norm=m.qk_norm, block_init=m.block_init,
                                          upsample_steps=m.motion_upsample_steps)
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

    def _cameras(self, tokens: Tensor, given: dict | None, images: Tensor) -> dict:
        """tokens: (B, V, N, D), images: (B, V, 3, H, W) -> {"c2w": (B, V, 4, 4), "fxfycxcy": (B, V, 4)}, given or
        predicted."""
        b, v, _, h, w = images.shape
        if given is None:
            if self.camera is None:
                raise ConfigError("this model was trained with model.cameras=given (posed): pass the views' cameras "
                                  "(c2w and fxfycxcy); the dataset's metadata provides them")
            return self.camera(tokens, h, w, images)
        c2w, k = given["c2w"], given["fxfycxcy"]
        if tuple(c2w.shape) != (b, v, 4, 4) or tuple(k.shape) != (b, v, 4):
            raise ConfigError(f"given cameras must be c2w ({b}, {v}, 4, 4) and fxfycxcy ({b}, {v}, 4) for these "
                              f"images; got {tuple(c2w.shape)} and {tuple(k.shape)}")
        return {"c2w": normalize_given_c2w(c2w.float()), "fxfycxcy": k.float()}

    def plucker(self, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int) -> Tensor:
        """c2w: (B, V, 4, 4), fxfycxcy: (B, V, 4) -> Plücker maps (B, V, 6, H, W), computed in fp32."""
        with torch.autocast(c2w.device.type, enabled=False):
            return plucker_rays_chw(c2w.float(), fxfycxcy.float(), height, width)

    def token_mask_from_probs(self, probs: Tensor, grid: tuple[int, int] | None = None,
                              threshold: float | None = None) -> Tensor:
        """probs: (B, Vc, 1, H', W') motion probability (any resolution) -> (B, Vc, N) bool: its mean over each
        patch's area exceeds ``threshold`` (default ``mask_token_threshold``; the release's rule, 0.1 there).
        ``grid``: the token grid (default: that of a model-sized image)."""
        b, v = probs.shape[:2]
        grid = grid or (self.image_size // self.patch, self.image_size // self.patch)
        pooled = F.adaptive_avg_pool2d(probs.float().flatten(0, 1), grid)
        threshold = self.mask_token_threshold if threshold is None else threshold
        return (pooled > threshold).reshape(b, v, -1)

    def forward(self, images: Tensor, num_context: int, *, motion_probs: Tensor | None = None,
                semantic_feats: Tensor | None = None, render_targets: bool = True, motion_all_views: bool = False,
                apply_mae: bool | None = None, render_inputs: bool = False, cameras: dict | None = None,
                mask_token_threshold: float | None = None, camera_images: Tensor | None = None) -> dict:
        """images: (B, V, 3, H, W) in [0, 1], context views first, V = num_context + num_target, or V = num_context
        (cameras, masks and scene only; ``renders`` is None).

        motion_probs: (B, Vc, 1, H, W) or None, used for token masking instead of the model's own masks.
        semantic_feats: (B, Vm, C, h, w) or None (checked by the motion head), Vm = V when ``motion_all_views``
        (masks for every view, e.g. to supervise targets in training) else Vc.
        ``render_targets=False`` skips the renderer; ``apply_mae`` turns noise-token masking on (True) or off (False)
        for this call, None keeps the model's own setting (``model.use_mae_masking``);
        ``render_inputs=True`` also re-renders the context views (``input_renders``).
        mask_token_threshold: this call's token-masking threshold (None: the model's ``mask_token_threshold``).
        cameras: {"c2w": (B, V, 4, 4) in any world frame, "fxfycxcy": (B, V, 4) pixels} known cameras, required by a
        posed model (``model.cameras=given``) and used instead of the estimator's; they are normalised by
        :func:`normalize_given_c2w` (view 0 = I, farthest centre at 1), and ``out["cameras"]`` holds that frame.
        camera_images: (B, V, 3, H, W) or None: the views the camera estimator reads instead of ``images`` (for a
        training augmentation that changes only them, ``training.camera_paste``); None = ``images``.
        """
        b, v, _, h, w = images.shape
        vc = num_context
        self._check_views(v, vc)
        tokens = self.tokenizer(images)  # (B, V, N, D)
        if camera_images is None:
            cameras = self._cameras(tokens, cameras, images)
        else:
            if camera_images.shape != images.shape:
                raise ValueError(f"camera_images {tuple(camera_images.shape)} must match images "
                                 f"{tuple(images.shape)}")
            cameras = self._cameras(self.tokenizer(camera_images), cameras, camera_images)
        plucker = self.plucker(cameras["c2w"], cameras["fxfycxcy"], h, w)  # (B, V, 6, H, W)
        ctx_plucker_tokens = self.scene.plucker_embed(plucker[:, :vc])  # (B, Vc, N, D)

        motion_logits = None
        if self.motion is not None:
            sem = semantic_feats
            rays = ctx_plucker_tokens if self.motion_context_rays == "scene" else self.renderer.plucker_embed(
                plucker[:, :vc])  # (B, Vc, N, D)
            motion_logits = self.motion(None if sem is None else sem[:, :vc], tokens[:, :vc], rays,
                                        h, w)  # (B, Vc, 1, H, W)
            if motion_all_views and v > vc:  # targets: the renderer's Plücker tokens, as in the release
                tgt = self.motion(None if sem is None else sem[:, vc:], tokens[:, vc:],
                                  self.renderer.plucker_embed(plucker[:, vc:]), h, w)
                motion_logits = torch.cat([motion_logits, tgt], dim=1)

        fused = self.scene.fuse_tokens(tokens[:, :vc], ctx_plucker_tokens)  # (B, Vc, N, D)
        token_mask = None
        if (self.use_mae_masking if apply_mae is None else apply_mae):
            probs = motion_probs if motion_probs is not None else (
                torch.sigmoid(motion_logits[:, :vc].float()) if motion_logits is not None else None)
            if probs is not None:
                token_mask = self.token_mask_from_probs(probs, (h // self.patch, w // self.patch),
                                                        mask_token_threshold)  # (B, Vc, N)
                fused = torch.where(token_mask[..., None], self.noise_token.to(fused.dtype), fused)

        scene_tokens = self.scene(fused)
        renders = self.renderer(scene_tokens, plucker[:, vc:]) if render_targets and v > vc else None
        input_renders = self.renderer(scene_tokens, plucker[:, :vc]) if render_inputs else None
        return {"cameras": cameras, "motion_logits": motion_logits, "token_mask": token_mask,
                "scene_tokens": scene_tokens, "renders": renders, "input_renders": input_renders}

    def render(self, scene_tokens: Tensor, c2w: Tensor, fxfycxcy: Tensor) -> Tensor:
        """scene_tokens: (B, L, D), c2w: (B, T, 4, 4) relative to view 0, fxfycxcy: (B, T, 4) -> (B, T, 3, H, W)."""
        size = self.image_size
        return self.renderer(scene_tokens, self.plucker(c2w, fxfycxcy, size, size))
