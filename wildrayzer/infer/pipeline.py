"""A loaded model ready to run: network + frozen semantic backbone + device, shared by the runner, API and demo.

Keeps I/O and device choice out of the pure model: this is where checkpoints are read and tensors are moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..distributed import pick_device
from ..errors import CheckpointError, ConfigError
from ..image_ops import resize_images
from ..weights import load_model_checkpoint


@dataclass
class Pipeline:
    model: torch.nn.Module  # wildrayzer.model.WildRayZerModel, eval mode
    semantic: torch.nn.Module | None  # frozen backbone when the model has a motion estimator
    config: object  # the config stored with the checkpoint
    device: torch.device
    path: Path

    @property
    def num_context(self) -> int:
        return int(self.config.model.num_context_views)

    @property
    def num_target(self) -> int:
        return int(self.config.model.num_target_views)

    @property
    def image_size(self) -> int:
        return int(self.config.model.image_size)

    @classmethod
    def load(cls, path: str | Path, expected_cfg=None, device: str = "auto", semantic_cfg=None) -> Pipeline:
        """path: weights file, run dir or pretrained dir. ``expected_cfg`` (optional): the user's config, whose
        architecture (view counts, layers, width) must match the checkpoint's. ``semantic_cfg`` overrides the stored
        ``semantic`` section (e.g. a local DINOv3 path on this machine); its feature width must match.
        A release checkpoint file (``wildrayzer_2view.pt``) is converted once into a directory beside it."""
        from ..official.convert import cached_conversion, is_official_file

        if is_official_file(path) and Path(path).is_file():
            m = expected_cfg.model if expected_cfg is not None else None
            dinov3 = semantic_cfg is not None and semantic_cfg.backbone == "dinov3"
            dino = str(semantic_cfg.model_path) if dinov3 else ""
            path = cached_conversion(path, *((m.image_size, m.num_context_views, m.num_target_views) if m else ()),
                                     dinov3_path=dino)
        loaded = load_model_checkpoint(path, expected_cfg=expected_cfg)
        dev = pick_device(device)
        semantic = None
        if loaded.model.motion is not None:
            from ..semantic import build_semantic_backbone

            stored = loaded.config.semantic
            sem_cfg = semantic_cfg if semantic_cfg is not None else stored
            for key in ("backbone", "feature_size", "normalize"):  # what the motion head was trained on
                if sem_cfg[key] != stored[key]:
                    raise ConfigError(f"semantic.{key}={sem_cfg[key]} but {loaded.path} was trained with "
                                      f"semantic.{key}={stored[key]}; set semantic.{key}={stored[key]}")
            semantic = build_semantic_backbone(sem_cfg)
            want = int(loaded.metadata.get("semantic_dim", "0"))
            if semantic.out_dim != want:
                raise ConfigError(f"semantic.backbone={sem_cfg.backbone} gives {semantic.out_dim}-channel features but "
                                  f"{loaded.path} was trained with {want}; use the checkpoint's backbone "
                                  f"({loaded.config.semantic.backbone})")
            semantic = semantic.to(dev)
        return cls(loaded.model.to(dev).eval(), semantic, loaded.config, dev, loaded.path)

    def semantic_features(self, images: Tensor) -> Tensor | None:
        """images: (B, V, 3, H, W) -> (B, V, C, h, w) or None without a motion estimator."""
        if self.semantic is None:
            return None
        b, v = images.shape[:2]
        feats = self.semantic(images.flatten(0, 1))
        return feats.view(b, v, *feats.shape[1:])

    @property
    def posed(self) -> bool:
        """True for a model trained with known cameras (``model.cameras=given``): ``run`` needs them."""
        return self.model.camera is None

    def check_images(self, images: Tensor) -> None:
        """images: (B, V, 3, H, W). V must be the trained view count (context + targets) or the context count."""
        if images.dim() != 5 or images.shape[2] != 3:
            raise ConfigError(f"expected images of shape (B, V, 3, H, W); got {tuple(images.shape)}")
        v, size = images.shape[1], self.image_size
        allowed = {self.num_context + self.num_target, self.num_context}
        if v not in allowed:
            raise ConfigError(f"{self.path} was trained for {self.num_context} context + {self.num_target} target "
                              f"views; got {v} images. Pass {self.num_context} (context only) or "
                              f"{self.num_context + self.num_target} images, or use a checkpoint for your view count")
        if images.shape[-2:] != (size, size):
            raise ConfigError(f"images must be {size}x{size} for this checkpoint; got {tuple(images.shape[-2:])}")

    @torch.no_grad()
    def run(self, images: Tensor, cameras: dict | None = None, apply_mae: bool | None = None,
            semantic_feats: Tensor | None = None, render_inputs: bool = False) -> dict:
        """images: (B, V, 3, H, W) in [0, 1], context first -> the model's prediction dict, plus ``motion_probs``
        (B, Vc, 1, H, W) or None. With V == num_context only cameras, masks and the scene are predicted.
        cameras: {"c2w": (B, V, 4, 4), "fxfycxcy": (B, V, 4) pixels}, needed by a posed model (``posed``).
        apply_mae: token masking on/off for this call; None = the checkpoint's own setting.
        semantic_feats: the context views' :meth:`semantic_features` when the caller already has them, else None.
        render_inputs: also re-render the context views from the scene at their own cameras (``input_renders``)."""
        self.check_images(images)
        images = images.to(self.device, torch.float32)
        sem = self.semantic_features(images[:, : self.num_context]) if semantic_feats is None else semantic_feats
        with_targets = images.shape[1] > self.num_context
        if cameras is not None:
            cameras = {k: cameras[k].to(self.device, torch.float32) for k in ("c2w", "fxfycxcy")}
        out = self.model(images, self.num_context, semantic_feats=sem, render_targets=with_targets, cameras=cameras,
                         apply_mae=apply_mae, render_inputs=render_inputs)
        logits = out.get("motion_logits")
        probs = torch.sigmoid(logits.float()) if logits is not None else None
        if probs is not None and probs.shape[-2:] != images.shape[-2:]:  # a release decoder at patch != 16
            b, v = probs.shape[:2]
            probs = resize_images(probs.flatten(0, 1), *images.shape[-2:]).view(b, v, 1, *images.shape[-2:])
        out["motion_probs"] = probs
        return out

    @torch.no_grad()
    def render(self, scene_tokens: Tensor, c2w: Tensor, fxfycxcy: Tensor, chunk: int = 8) -> Tensor:
        """scene_tokens: (B, L, D), c2w: (B, T, 4, 4), fxfycxcy: (B, T, 4) -> (B, T, 3, H, W), T in chunks."""
        if c2w.dim() != 4 or fxfycxcy.shape[:2] != c2w.shape[:2]:
            raise ConfigError(f"render: expected c2w (B, T, 4, 4) and fxfycxcy (B, T, 4); got {tuple(c2w.shape)} "
                              f"and {tuple(fxfycxcy.shape)}")
        scene_tokens = scene_tokens.to(self.device)
        c2w, fxfycxcy = c2w.to(self.device, torch.float32), fxfycxcy.to(self.device, torch.float32)
        parts = [self.model.render(scene_tokens, c2w[:, i: i + chunk], fxfycxcy[:, i: i + chunk])
                 for i in range(0, c2w.shape[1], chunk)]
        return torch.cat(parts, dim=1).clamp(0, 1)


def item_cameras(model, item: dict, device) -> dict | None:
    """A dataset item's cameras as a batch of one on ``device`` when ``model`` is posed (``model.cameras=given``,
    no camera estimator), else None (the model predicts them)."""
    if model.camera is not None:
        return None
    return {k: item[k][None].to(device) for k in ("c2w", "fxfycxcy")}  # (1, V, 4, 4), (1, V, 4)


def missing_checkpoint_message(path: str) -> str:
    from ..official.convert import RELEASE_URL

    return (f"checkpoint not found: {path}. Download the authors' 2-input-view checkpoint from {RELEASE_URL} and "
            "place it there (it needs DINOv3 ViT-7B/16 in a local directory or the Hugging Face cache, see README "
            "'Use the authors' checkpoint'), point inference.model_path at a stage-3 run directory "
            "(experiments/<run_name>), or use the shipped tiny model: inference.model_path=checkpoints/"
            "wildrayzer_tiny_2view")


def check_checkpoint_exists(path: str) -> None:
    if not path or not Path(path).exists():
        raise CheckpointError(missing_checkpoint_message(path))
