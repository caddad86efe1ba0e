"""Value checks of a loaded config that its types alone cannot express (choices, ranges, divisibility, stage and
frozen-part names). Each failure is one ConfigError line naming the key. Run on every load, including configs read
from checkpoint headers, which are untrusted input."""

from __future__ import annotations

import difflib
import math

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

MODEL_PARTS = ("tokenizer", "camera", "scene", "renderer", "motion", "noise_token")  # top-level parts of WildRayZer

_CHOICES = {
    "semantic.backbone": ("dinov3", "efficientnet_lite0", "none"),
    "data.dataset": ("lvsm", "dynamic"),
    "data.on_error": ("raise", "skip"),
    "model.block_init": ("release", "gpt2"),
    "model.cameras": ("predicted", "given"),
    "model.camera_query": ("view_index", "own_view"),
    "model.motion_context_rays": ("scene", "renderer"),
    "pseudolabel.render_from": ("context", "farthest"),
    "training.amp": ("auto", "bf16", "fp32"),
    "training.device": ("auto", "cpu", "cuda"),
    "inference.device": ("auto", "cpu", "cuda"),
    "inference.video_format": ("gif", "mp4"),
    "logging.wandb": ("disabled", "offline", "online"),
}


# Sane bounds, checked before anything is allocated (a config in a checkpoint header is untrusted input too):
# key -> (smallest, largest). Floats must also be finite.
_RANGES = {
    "model.image_size": (1, 4096), "model.patch_size": (1, 256), "model.dim": (4, 16384), "model.heads": (1, 1024),
    "model.motion_heads": (0, 1024), "model.motion_upsample_steps": (0, 6), "model.mask_token_threshold": (0.0, 1.0),
    "pseudolabel.mask_token_threshold": (0.0, 1.0),
    "model.mlp_ratio": (0.25, 16.0), "model.camera_layers": (0, 256),
    "model.scene_layers": (0, 256), "model.renderer_layers": (0, 256), "model.motion_layers": (0, 256),
    "model.num_latents": (1, 65536), "model.num_context_views": (1, 64), "model.num_target_views": (1, 256),
    "model.focal_offset": (-100.0, 100.0), "semantic.feature_size": (1, 1024),
    "data.frame_gap_min": (0, 100000), "data.frame_gap_max": (0, 100000), "data.num_workers": (0, 256),
    "data.static_fraction": (0.01, 0.99),
    "training.seed": (0, 2 ** 32 - 1), "training.batch_size": (1, 65536), "training.grad_accum_steps": (1, 65536),
    "training.max_steps": (1, 10 ** 9), "training.lr": (1e-12, 10.0), "training.lr_warmup": (0, 10 ** 9),
    "training.min_lr_ratio": (0.0, 1.0), "training.weight_decay": (0.0, 10.0), "training.beta1": (0.0, 0.999999),
    "training.beta2": (0.0, 0.999999999), "training.grad_clip": (0.0, 1e6), "training.perceptual_weight": (0.0, 1e3),
    "training.ema_decay": (0.0, 0.999999),
    "training.mask_distill_loss_weight": (0.0, 1e3), "training.mask_pos_weight": (1e-6, 1e6),
    "training.psnr_filter_threshold": (-1e3, 1e3), "training.checkpoint_every": (1, 10 ** 9),
    "training.keep_last_n": (0, 10 ** 6), "training.log_every": (1, 10 ** 9),
    "training.max_nonfinite_steps": (1, 10 ** 9), "training.rollback_db": (0.0, 100.0),
    "training.rollback_every": (1, 10 ** 9), "training.rollback_lr_factor": (1e-6, 1.0),
    "training.max_rollbacks": (0, 10 ** 6), "copy_paste.probability": (0.0, 1.0),
    "copy_paste.max_objects": (0, 1000), "copy_paste.min_scale": (0.0, 1.0), "copy_paste.max_scale": (0.0, 1.0),
    "inference.video_frames": (1, 100000), "inference.plucker_vis_stride": (1, 4096),
    "inference.max_scenes": (0, 10 ** 9),
}


def _check_ranges(cfg: DictConfig) -> None:
    for key, (lo, hi) in _RANGES.items():
        value = OmegaConf.select(cfg, key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number; got {value}")
        if value is not None and not lo <= value <= hi:
            raise ConfigError(f"config key '{key}' must lie in [{lo}, {hi}]; got {value}")


def validate(cfg: DictConfig) -> None:
    """Value checks that types alone cannot express; each failure is one line naming the key."""
    for key, choices in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}; got '{value}'")
    _check_ranges(cfg)
    m = cfg.model
    if m.image_size % m.patch_size:
        raise ConfigError(f"model.image_size={m.image_size} is not a multiple of model.patch_size={m.patch_size}")
    if m.dim % m.heads:
        raise ConfigError(f"model.dim={m.dim} is not divisible by model.heads={m.heads}")
    if m.dim % 4:
        raise ConfigError(f"model.dim={m.dim} must be divisible by 4 (the image tokens' 2-D sin-cos embedding)")
    if m.use_motion_mask:
        steps = m.motion_upsample_steps or m.patch_size.bit_length() - 1
        if not m.motion_upsample_steps and (m.patch_size < 2 or 2 ** steps != m.patch_size):
            raise ConfigError(f"model.patch_size={m.patch_size} must be a power of two when model.use_motion_mask "
                              "is on (the motion decoder upsamples x2 per step)")
        if m.dim % (m.motion_heads or m.heads) or m.dim % 2 ** (steps + 1):
            raise ConfigError(f"model.dim={m.dim} must be divisible by model.motion_heads={m.motion_heads} (0: "
                              f"model.heads) and by {2 ** (steps + 1)} (motion decoder channels at patch "
                              f"{m.patch_size})")
    if cfg.training.stage not in (1, 2, 3):
        raise ConfigError(f"training.stage must be 1, 2 or 3; got {cfg.training.stage}")
    if cfg.copy_paste.motion not in ("jump", "glide"):
        raise ConfigError(f"copy_paste.motion must be jump or glide; got {cfg.copy_paste.motion!r}")
    if cfg.training.camera_paste and (cfg.training.stage != 1 or m.cameras == "given"):
        why = (f"training.stage={cfg.training.stage} (stages 2-3 paste with copy_paste.enabled)"
               if cfg.training.stage != 1 else "model.cameras=given (no camera estimator to train)")
        raise ConfigError(f"training.camera_paste=true needs a stage-1 model that predicts its cameras; got {why}")
    for part in cfg.training.freeze_parts:
        if part not in MODEL_PARTS:
            close = difflib.get_close_matches(part, MODEL_PARTS, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"training.freeze_parts: unknown part '{part}' (parts: {', '.join(MODEL_PARTS)}){hint}")
    if cfg.data.frame_gap_min > cfg.data.frame_gap_max:
        raise ConfigError("data.frame_gap_min must be <= data.frame_gap_max")
