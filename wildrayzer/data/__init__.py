"""Datasets and data tools: ``build_dataset(cfg, mode)`` (docs/CONTRACTS.md), the synthetic benchmark generator,
COCO copy-paste transients and the importer for one's own photos/videos."""

from __future__ import annotations

from .copy_paste import CopyPaste
from .dynamic import DynamicDataset
from .lvsm import LVSMDataset
from .static_mix import StaticMix, with_static_mix
from .synthetic import SynthParams, ensure_default_data, generate

__all__ = ["CopyPaste", "DynamicDataset", "LVSMDataset", "StaticMix", "SynthParams", "build_dataset",
           "ensure_default_data", "generate"]


def build_dataset(cfg, mode: str = "train", seed: int | None = None) -> LVSMDataset | StaticMix:
    """``cfg``: the full config. ``mode``: "train" (seeded window sampling) | "eval" (``data.view_idx_file`` or an
    evenly spread deterministic choice). ``data.dataset`` picks the static LVSM or the Dynamic-RE10K loader;
    ``data.static_root`` (stages 2-3) mixes static scenes into the training set (:mod:`.static_mix`)."""
    cls = {"lvsm": LVSMDataset, "dynamic": DynamicDataset}[cfg.data.dataset]
    dataset = cls(cfg, mode, seed)
    return with_static_mix(cfg, dataset, seed) if mode == "train" else dataset
