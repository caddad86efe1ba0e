"""State-dict keys of the authors' release (``Images2Latent4D``) -> this package's ``WildRayZerModel``.

Pure functions on dicts of tensors: sizes are inferred from the tensors themselves, every release key is either
mapped one to one (same values, same layout, except the noise token's shape) or listed as dropped with a reason.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor

from ..errors import CheckpointError

# Block-internal names: release -> ours (identical for the pose encoder, scene encoder, renderer and motion head).
_BLOCK = {"norm1.weight": "norm1.weight", "norm2.weight": "norm2.weight", "attn.to_qkv.weight": "attn.qkv.weight",
          "attn.fc.weight": "attn.proj.weight", "attn.q_norm.weight": "attn.q_norm.weight",
          "attn.k_norm.weight": "attn.k_norm.weight", "mlp.mlp.0.weight": "mlp.fc1.weight",
          "mlp.mlp.2.weight": "mlp.fc2.weight"}
_STACKS = {"transformer_encoder": "camera.transformer.blocks", "transformer_encoder_geom": "scene.transformer.blocks",
           "transformer_decoder": "renderer.transformer.blocks",
           "motion_mask_predictor.motion_transformer": "motion.transformer.blocks"}
# Prefix renames, longest first where one prefix contains another.
_PREFIXES = (
    ("image_tokenizer.1.", "tokenizer.embed.proj."),
    ("pe_embedder.", "tokenizer.pe_mlp."),
    ("temporal_pe_embedder.", "camera.view_pe_mlp."),
    ("pose_predictor.rel_head.", "camera.pose_head."),
    ("pose_predictor.canonical_k_head.", "camera.focal_head."),
    ("target_pose_tokenizer2.1.", "renderer.plucker_embed.proj."),
    ("target_pose_tokenizer.1.", "scene.plucker_embed.proj."),
    ("mlp_fuse.", "scene.fuse."),
    ("decoder_ln.", "renderer.input_norm."),
    ("image_token_decoder.0.", "renderer.head_norm."),
    ("image_token_decoder.1.", "renderer.head."),
    ("motion_mask_predictor.dino_proj.", "motion.semantic_proj."),
    ("motion_mask_predictor.token_proj.", "motion.image_proj."),
    ("motion_mask_predictor.pose_proj.", "motion.plucker_proj."),
    ("motion_mask_predictor.fusion_mlp.", "motion.fuse."),
    ("motion_mask_predictor.dpt_readout.", "motion.readout."),
    ("motion_mask_predictor.scale1_refine.", "motion.decoder.grid_refine."),
    ("motion_mask_predictor.head.", "motion.decoder.head."),
)
_WHOLE = {"scene_code": "scene.latents", "cam_code": "camera.cam_token", "noise_token": "noise_token"}
_UP = re.compile(r"^motion_mask_predictor\.up(\d+)\.(conv_up|refine)\.(.+)$")
_SCALE = re.compile(r"^motion_mask_predictor\.scale(\d+)_refine\.(.+)$")
# Release keys that are not weights of the model: the reason is reported, the values dropped.
DROPPED = {"loss_computer.": "training-loss weights", "motion_mask_predictor.dino_norm_": "DINOv3 input normalisation "
           "(the semantic backbone applies it)"}


def map_key(name: str) -> str | None:
    """A release key -> ours, or None when it is not a model weight (see DROPPED). CheckpointError if unknown."""
    if any(name.startswith(p) for p in DROPPED):
        return None
    if name in _WHOLE:
        return _WHOLE[name]
    for stack, ours in sorted(_STACKS.items(), key=lambda kv: -len(kv[0])):
        m = re.match(rf"^{re.escape(stack)}\.(\d+)\.(.+)$", name)
        if m and m.group(2) in _BLOCK:
            return f"{ours}.{m.group(1)}.{_BLOCK[m.group(2)]}"
    m = _UP.match(name)
    if m:  # up2..upK are our ups.0..ups.K-2
        inner = "conv." if m.group(2) == "conv_up" else "refine."
        return f"motion.decoder.ups.{int(m.group(1)) - 2}.{inner}{m.group(3)}"
    m = _SCALE.match(name)
    if m and int(m.group(1)) >= 2:
        return f"motion.decoder.refines.{int(m.group(1)) - 2}.{m.group(2)}"
    for old, new in _PREFIXES:
        if name.startswith(old):
            return new + name[len(old):]
    raise CheckpointError(f"release checkpoint key '{name}' is not part of the released architecture (is this a "
                          "WildRayZer / Images2Latent4D checkpoint?)")


def _layers(state: dict[str, Tensor], stack: str) -> int:
    idx = {int(m.group(1)) for k in state if (m := re.match(rf"^{re.escape(stack)}\.(\d+)\.", k))}
    if idx != set(range(len(idx))):
        raise CheckpointError(f"release checkpoint: blocks of '{stack}' are not numbered 0..n-1 ({sorted(idx)})")
    return len(idx)


def _need(state: dict[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise CheckpointError(f"release checkpoint has no '{key}': not a WildRayZer / Images2Latent4D state dict")
    return state[key]


def infer_model_config(state: dict[str, Tensor]) -> dict:
    """The ``model`` config values that the tensors determine (width, heads, depths, latents, patch, channels)."""
    latents = _need(state, "scene_code")
    if latents.ndim != 2:
        raise CheckpointError(f"release checkpoint: scene_code has shape {tuple(latents.shape)}, expected (L, D)")
    num_latents, dim = latents.shape
    tok = _need(state, "image_tokenizer.1.weight")
    patch = math.isqrt(tok.shape[1] // 3)
    if tok.shape[0] != dim or 3 * patch * patch != tok.shape[1]:
        raise CheckpointError(f"release checkpoint: image_tokenizer.1.weight {tuple(tok.shape)} does not fit width "
                              f"{dim} and RGB patches")
    head_dim = _need(state, "transformer_encoder.0.attn.q_norm.weight").shape[0]
    mlp_hidden = _need(state, "transformer_encoder.0.mlp.mlp.0.weight").shape[0]
    cfg = {"dim": int(dim), "num_latents": int(num_latents), "patch_size": int(patch), "heads": int(dim // head_dim),
           "mlp_ratio": float(mlp_hidden / dim), "qk_norm": True,
           "camera_layers": _layers(state, "transformer_encoder"),
           "scene_layers": _layers(state, "transformer_encoder_geom"),
           "renderer_layers": _layers(state, "transformer_decoder"), "focal_offset": 1.25}
    motion = any(k.startswith("motion_mask_predictor.") for k in state)
    cfg["use_motion_mask"] = motion
    cfg["use_mae_masking"] = motion  # the release masks tokens whenever it predicts masks
    if motion:
        cfg["motion_layers"] = _layers(state, "motion_mask_predictor.motion_transformer")
        mhd = _need(state, "motion_mask_predictor.motion_transformer.0.attn.q_norm.weight").shape[0]
        cfg["motion_heads"] = 0 if mhd == head_dim else int(dim // mhd)  # 0: as many as the other stacks
        ups = {int(m.group(1)) for k in state if (m := _UP.match(k))}
        if ups != set(range(2, 2 + len(ups))) or not ups:
            raise CheckpointError(f"release checkpoint: motion decoder stages up{sorted(ups)} are not up2..upK")
        # the release's decoder upsamples x2 per stage whatever the patch: 0 (one logit per pixel) when they agree
        cfg["motion_upsample_steps"] = 0 if 2 ** len(ups) == patch else len(ups)
    return cfg


def semantic_channels(state: dict[str, Tensor]) -> int:
    """Channel count of the semantic features the motion head reads (0 without a motion head)."""
    w = state.get("motion_mask_predictor.dino_proj.1.weight")
    return 0 if w is None else int(w.shape[1])


def convert_state(state: dict[str, Tensor], own: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict]:
    """Map a release state dict onto ``own`` (our model's state dict, for shapes).

    -> (our state dict, report) with ``report = {"dropped": {reason: count}, "filled": [keys]}``. The noise token is
    reshaped ``(1, 1, D) -> (D,)``; a key of ours that the release lacks is an error except ``noise_token``, which
    is filled deterministically (trunc-normal, std 0.02, seed 0, as a fresh release launch would draw it).
    """
    out: dict[str, Tensor] = {}
    dropped: dict[str, int] = {}
    for name, value in state.items():
        ours = map_key(name)
        if ours is None:
            reason = next(r for p, r in DROPPED.items() if name.startswith(p))
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        if ours not in own:
            raise CheckpointError(f"release key '{name}' maps to '{ours}', which this model does not have (built with "
                                  "other sizes than the checkpoint?)")
        if ours == "noise_token" and value.numel() == own[ours].numel():  # (1, 1, D) in the release
            value = value.reshape(own[ours].shape)
        if tuple(value.shape) != tuple(own[ours].shape):
            raise CheckpointError(f"release key '{name}' has shape {tuple(value.shape)}, the model's '{ours}' "
                                  f"{tuple(own[ours].shape)}")
        if ours in out:
            raise CheckpointError(f"release checkpoint maps two keys onto '{ours}'")
        out[ours] = value.detach().to(own[ours].dtype).contiguous()
    filled = []
    missing = [k for k in own if k not in out]
    if missing == ["noise_token"]:
        token = torch.empty(own["noise_token"].shape)
        torch.nn.init.trunc_normal_(token, std=0.02, generator=torch.Generator().manual_seed(0))
        out["noise_token"] = token
        filled.append("noise_token")
    elif missing:
        raise CheckpointError(f"release checkpoint lacks {len(missing)} weights of the model: "
                              f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    return out, {"dropped": dropped, "filled": filled}
