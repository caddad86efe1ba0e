"""Static scenes mixed into the dynamic training data of stages 2-3 (``data.static_root``, ``data.static_fraction``).

Pseudo-labels only ever say where a static render and a photo disagree, so the mask estimator also learns to flag
static content the renderer gets wrong (on the embedded static test a head trained on them flagged 14 % of the
context tokens of scenes where nothing moves). Scenes known to be static are the negatives it lacks: their items
carry ``static_scene=True`` and the motion stages label every one of their views static, pasted objects aside
(:meth:`wildrayzer.train.stage2.MotionStageBase.labels`); stage 3's rendering loss is then unmasked on them.

Items of both kinds carry the same keys, so they batch together: a static item gets all-zero ``motion_masks`` and
its own images as ``clean_images`` where the dynamic data has those keys.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError


class StaticMix(Dataset):
    """``dynamic`` items first, then ``round(n * f / (1 - f))`` static ones (n dynamic items, f = ``fraction``), so
    that a shuffled epoch draws a share ``f`` of static samples. With fewer static slots than static items the slots
    move on by their count each epoch (:meth:`set_epoch`), so every static scene is visited over the epochs."""

    def __init__(self, dynamic: Dataset, static: Dataset, fraction: float):
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"data.static_fraction must lie strictly between 0 and 1; got {fraction}")
        self.dynamic, self.static, self.fraction = dynamic, static, float(fraction)
        self.num_dynamic = len(dynamic)
        self.num_static = max(1, round(self.num_dynamic * fraction / (1.0 - fraction)))
        self.epoch = 0
        probe = dynamic[0]
        self.extra_keys = [k for k in ("motion_masks", "clean_images") if k in probe]

    def __len__(self) -> int:
        return self.num_dynamic + self.num_static

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for part in (self.dynamic, self.static):
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)

    def static_index(self, slot: int) -> int:
        """slot in [0, num_static) -> index into the static dataset for the current epoch."""
        return (slot + self.epoch * self.num_static) % len(self.static)

    def __getitem__(self, index: int) -> dict:
        if index < self.num_dynamic:
            item = self.dynamic[index]
            item["static_scene"] = torch.tensor(False)
            return item
        item = self.static[self.static_index(index - self.num_dynamic)]
        item["static_scene"] = torch.tensor(True)
        if "motion_masks" in self.extra_keys:
            item["motion_masks"] = torch.zeros_like(item["images"][:, :1])  # (V, 1, S, S): nothing moves
        if "clean_images" in self.extra_keys:
            item["clean_images"] = item["images"].clone()  # (V, 3, S, S)
        return item

    def summary(self) -> str:
        share = self.num_static / len(self)
        return (f"{self.dynamic.summary()}; mixed with {self.static.summary()} in {self.num_static} slot(s) "
                f"({share:.0%} of the samples)")


def with_static_mix(cfg, dynamic: Dataset, seed: int | None = None) -> Dataset:
    """``dynamic`` (the training set of stage 2 or 3) with ``data.static_root``'s scenes mixed in; unchanged when
    ``data.static_root`` is empty."""
    from omegaconf import OmegaConf

    from .lvsm import LVSMDataset

    d = cfg.data
    if not d.static_root:
        return dynamic
    if cfg.training.stage == 1 or d.dataset != "dynamic":
        raise ConfigError(f"data.static_root mixes static scenes into the dynamic data of stages 2-3; this run has "
                          f"training.stage={cfg.training.stage} and data.dataset={d.dataset} (unset data.static_root "
                          "or train stage 2 or 3 on data.dataset=dynamic)")
    static_cfg = OmegaConf.merge(cfg, {"data": {"root": d.static_root, "dataset": "lvsm", "list_file": "full_list.txt",
                                                "view_idx_file": ""}})
    # a seed of its own: static item i must not draw the same frame window as dynamic item i
    static_seed = int(cfg.training.seed if seed is None else seed) + 1
    return StaticMix(dynamic, LVSMDataset(static_cfg, "train", static_seed), float(d.static_fraction))
