"""Python API in the Hugging Face style::

    from wildrayzer import WildRayZer
    model = WildRayZer.from_pretrained("checkpoints/wildrayzer_tiny_2view")   # local dir or hub id (offline cache)
    out = model.predict(images)            # list of PIL / numpy / tensor images, any size (centre-cropped, resized)
    out["cameras"], out["motion_masks"]
    views = model.render(out, c2w, fxfycxcy)

Loads the config stored with the checkpoint; a wrong number of images is a clear error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import CheckpointError, UserError
from .image_ops import resize_images
from .infer.pipeline import Pipeline


def _to_chw(img) -> Tensor:
    """PIL image, (H, W[, C]) array (uint8 or float in [0, 1]) or (C, H, W) tensor -> float (3, H, W) in [0, 1]."""
    if isinstance(img, Tensor):
        t = img.detach().float().cpu()
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            raise UserError(f"tensor images must be (C, H, W) with C in 1, 3, 4; got {tuple(img.shape)}")
        t = t / 255.0 if img.dtype == torch.uint8 or t.max() > 1.5 else t
    else:
        arr = np.asarray(img.convert("RGB") if hasattr(img, "convert") else img)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise UserError(f"images must be (H, W[, C]) with C in 1, 3, 4; got shape {arr.shape}")
        t = torch.tensor(arr, dtype=torch.float32).permute(2, 0, 1)  # a copy: PIL arrays are read-only
        if arr.dtype == np.uint16:
            t = t / 65535.0
        elif arr.dtype == np.uint8 or t.max() > 1.5:
            t = t / 255.0
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t[:3].clamp(0, 1)


def prepare_images(images, size: int) -> Tensor:
    """A list of images of any sizes -> (V, 3, size, size): centre crop to square, then resize (antialiased)."""
    out = []
    for img in images:
        t = _to_chw(img)
        h, w = t.shape[-2:]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        out.append(resize_images(t[None, :, top: top + s, left: left + s], size, size)[0])
    return torch.stack(out).clamp(0, 1)


def _release_file(folder: Path) -> Path:
    """A folder without ``model.safetensors`` that holds exactly one release checkpoint (the authors' hub repo
    ``uva-cv-lab/wildrayzer-2view`` holds ``wildrayzer_2view.pt``) -> that file; else the folder itself."""
    from .official.convert import is_official_file

    if folder.is_dir() and not (folder / "model.safetensors").exists():
        found = [p for p in folder.iterdir() if p.is_file() and is_official_file(p)]
        if len(found) == 1:
            return found[0]
    return folder


def _resolve_pretrained(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.exists():
        return _release_file(p)
    if str(name_or_path).count("/") == 1 and not str(name_or_path).startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download

            return _release_file(Path(snapshot_download(str(name_or_path), local_files_only=True)))
        except Exception as e:  # noqa: BLE001 - offline cache miss has several exception types
            raise CheckpointError(f"'{name_or_path}' is neither a local path nor a model in the Hugging Face cache "
                                  f"({type(e).__name__}); download it first with `huggingface-cli download "
                                  f"{name_or_path}` on a machine with internet") from None
    raise CheckpointError(f"pretrained model not found: {name_or_path}")


class WildRayZer:
    """A loaded WildRayZer ready for prediction (wraps :class:`~wildrayzer.infer.pipeline.Pipeline`)."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str = "auto") -> WildRayZer:
        """A pretrained dir (``model.safetensors`` + ``config.yaml``), a weights file, a run dir, or a hub id that
        is already in the local Hugging Face cache (no download happens here)."""
        return cls(Pipeline.load(_resolve_pretrained(name_or_path), device=device))

    @property
    def config(self):
        return self.pipeline.config

    @property
    def num_context_views(self) -> int:
        return self.pipeline.num_context

    @property
    def image_size(self) -> int:
        return self.pipeline.image_size

    def predict(self, images) -> dict:
        """images: the ``num_context_views`` input photos of one scene (list of PIL / numpy / tensor, any size).

        Returns ``cameras`` {"c2w": (V, 4, 4) relative to view 0, "fxfycxcy": (V, 4) pixels at ``image_size``},
        ``motion_masks`` (V, 1, S, S) probabilities or None, ``images`` (V, 3, S, S) as the model saw them and
        ``scene_tokens`` (1, L, D) for :meth:`render`.
        """
        if isinstance(images, (Tensor, np.ndarray)) and images.ndim == 4:  # (V, C, H, W) tensor / (V, H, W, C) array
            images = list(images)
        if not isinstance(images, (list, tuple)):
            raise UserError("predict() takes a list of images")
        if len(images) != self.num_context_views:
            raise UserError(f"this model takes {self.num_context_views} input views; got {len(images)} images "
                            "(the view count is fixed at training time)")
        x = prepare_images(images, self.image_size)
        out = self.pipeline.run(x[None])
        probs = out["motion_probs"]
        return {"cameras": {"c2w": out["cameras"]["c2w"][0].cpu(), "fxfycxcy": out["cameras"]["fxfycxcy"][0].cpu()},
                "motion_masks": probs[0].cpu() if probs is not None else None,
                "token_mask": out["token_mask"][0].cpu() if out.get("token_mask") is not None else None,
                "images": x, "scene_tokens": out["scene_tokens"]}

    def render(self, prediction: dict, c2w: Tensor, fxfycxcy: Tensor) -> Tensor:
        """Render the static scene of ``prediction`` from cameras c2w: (T, 4, 4) (same frame as the predicted
        cameras) and fxfycxcy: (T, 4) pixels at ``image_size`` -> (T, 3, S, S) in [0, 1]."""
        c2w = torch.as_tensor(c2w, dtype=torch.float32)
        fxfycxcy = torch.as_tensor(fxfycxcy, dtype=torch.float32)
        if c2w.dim() == 2:
            c2w, fxfycxcy = c2w[None], fxfycxcy.reshape(1, 4)
        return self.pipeline.render(prediction["scene_tokens"], c2w[None], fxfycxcy[None])[0].cpu()

    def interpolate(self, prediction: dict, num_frames: int = 24) -> Tensor:
        """Novel views along a smooth path (SLERP) through the predicted input cameras -> (T, 3, S, S)."""
        from .infer.video import camera_path

        c2w, k = camera_path(prediction["cameras"]["c2w"], prediction["cameras"]["fxfycxcy"], num_frames)
        return self.render(prediction, c2w, k)
