"""On-disk pseudo-mask export written by ``wildrayzer pseudolabel`` (to inspect labels; training computes its own).

Layout (one directory per scene, written to a temporary name and renamed, so a scene is either complete or absent)::

    <cache>/<scene>/labels.json       {"scene", "frames", "reliable", "psnr", "context_frames", "fingerprint", ...}
    <cache>/<scene>/<frame:06d>.png   uint8 mask, 255 = moving

``fingerprint`` hashes everything the masks depend on (pseudo-label and semantic settings, PSNR threshold, stage-1
checkpoint, image size); a scene whose fingerprint differs from the current one is recomputed, not reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from ..config import to_container

LABELS = "labels.json"


def safe_name(scene: str) -> str:
    """Scene name -> a single path component."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", scene) or "_"


def fingerprint(cfg, renders_from: str) -> str:
    """Hash of the settings the masks depend on. ``renders_from``: the stage-1 checkpoint path (or 'clean')."""
    parts = {"pseudolabel": to_container(cfg.pseudolabel), "semantic": to_container(cfg.semantic),
             "psnr_filter_threshold": cfg.training.psnr_filter_threshold, "image_size": cfg.model.image_size,
             "renders_from": renders_from}
    parts["semantic"].pop("cache_dir", None)  # where features are cached does not change them
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class PseudoLabelCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def scene_dir(self, scene: str) -> Path:
        return self.root / safe_name(scene)

    def meta(self, scene: str) -> dict | None:
        path = self.scene_dir(scene) / LABELS
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def is_done(self, scene: str, fp: str) -> bool:
        meta = self.meta(scene)
        return meta is not None and meta.get("fingerprint") == fp

    def write(self, scene: str, frames: list[int], masks: Tensor, meta: dict) -> Path:
        """masks: (T, 1, H, W) in {0, 1} for ``frames`` -> the scene directory, replaced atomically."""
        if masks.shape[0] != len(frames):
            raise ValueError(f"{len(frames)} frames but masks of shape {tuple(masks.shape)}")
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.scene_dir(scene)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=self.root))
        try:
            arr = (masks[:, 0].detach().cpu().numpy() > 0.5).astype(np.uint8) * 255
            for f, m in zip(frames, arr):
                if not cv2.imwrite(str(tmp / f"{int(f):06d}.png"), m):
                    raise OSError(f"could not write a mask PNG under {tmp}")
            (tmp / LABELS).write_text(json.dumps({"scene": scene, "frames": [int(f) for f in frames], **meta},
                                                 indent=1))
            if final.exists():  # a stale entry (other fingerprint): move it aside, then swap
                trash = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=self.root))
                os.replace(final, trash / "old")
                os.replace(tmp, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def read(self, scene: str, frames: list[int] | Tensor) -> tuple[Tensor, Tensor] | None:
        """-> masks (T, 1, H, W) float32 in {0, 1} and reliable (T,) bool for ``frames``, or None when the scene or
        any of the frames is not cached."""
        meta = self.meta(scene)
        if meta is None:
            return None
        index = {int(f): i for i, f in enumerate(meta["frames"])}
        wanted = [int(f) for f in frames]
        if any(f not in index for f in wanted):
            return None
        masks = []
        for f in wanted:
            m = cv2.imread(str(self.scene_dir(scene) / f"{f:06d}.png"), cv2.IMREAD_GRAYSCALE)
            if m is None:
                return None
            masks.append(torch.from_numpy((m > 127).astype(np.float32))[None])
        reliable = torch.tensor([bool(meta["reliable"][index[f]]) for f in wanted])
        return torch.stack(masks), reliable
