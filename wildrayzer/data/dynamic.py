"""Dynamic-RE10K loader: the LVSM layout plus optional ground truth next to ``images/``.

* ``binary_masks/<scene>/<frame>.png`` -> ``motion_masks`` (V, 1, S, S) in {0, 1} (1 = moving), when present and
  ``data.load_gt_masks``; ``<frame>`` is the image's file stem.
* ``clean_images/<scene>/<frame>.png`` -> ``clean_images`` (V, 3, S, S) (synthetic data only: the frame without
  transients), when present and ``data.load_clean_images``.

Presence is decided once per split directory, so either every item of a dataset carries a key or none does.
"""

from __future__ import annotations

import torch

from .frames import read_mask, read_rgb, resize_crop, to_chw
from .lvsm import LVSMDataset, SceneRecord


class DynamicDataset(LVSMDataset):
    """Dynamic scenes (moving transients); see :class:`LVSMDataset` for the item format and sampling."""

    def __init__(self, cfg, mode: str = "train", seed: int | None = None):
        super().__init__(cfg, mode, seed)
        self.mask_dir = self.split_dir / "binary_masks"
        self.clean_dir = self.split_dir / "clean_images"
        self.has_masks = bool(cfg.data.load_gt_masks) and self.mask_dir.is_dir()
        self.has_clean = bool(cfg.data.load_clean_images) and self.clean_dir.is_dir()

    def _extras(self, rec: SceneRecord, views: list[int]) -> dict:
        out = {}
        if self.has_masks:
            masks = []
            for f in views:
                m = self._read(rec, self.mask_dir / rec.name / (rec.image_paths[f].stem + ".png"), read_mask)
                masks.append(torch.from_numpy((resize_crop(m, self.size) >= 0.5).astype("float32"))[None])
            out["motion_masks"] = torch.stack(masks)  # (V, 1, S, S) in {0, 1}
        if self.has_clean:
            clean = [to_chw(resize_crop(self._read(rec, self.clean_dir / rec.name / (rec.image_paths[f].stem + ".png"),
                                                   read_rgb), self.size)) for f in views]
            out["clean_images"] = torch.stack(clean)  # (V, 3, S, S) in [0, 1]
        return out
