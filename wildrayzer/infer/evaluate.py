"""Metrics-only evaluation of a pipeline (or a baseline) over a dataset, without writing per-scene files.

Used by the quality benchmark and the training-schedule scripts; the inference runner writes files as well and
shares :func:`score_scene` with this module.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor

from .metrics import MetricsAggregator, pose_metrics, scene_metrics
from .pipeline import item_cameras


def score_scene(pipe, item: dict, lpips_model=None, apply_mae: bool | None = None) -> tuple[dict, dict]:
    """Run ``pipe`` on one dataset sample (context + targets) and score it (``apply_mae``: see Pipeline.run).
    -> (prediction dict, metrics dict)."""
    vc = pipe.num_context
    out = pipe.run(item["images"][None], cameras=item_cameras(pipe.model, item, pipe.device), apply_mae=apply_mae)
    renders = out["renders"][0].float().cpu().clamp(0, 1)  # (Vt, 3, H, W)
    probs = out["motion_probs"][0].cpu() if out["motion_probs"] is not None else None  # (Vc, 1, H, W)
    pred_c2w = out["cameras"]["c2w"][0].cpu()
    return out, metrics_for(item, vc, renders, probs, pred_c2w, lpips_model)


def metrics_for(item: dict, vc: int, renders: Tensor, probs: Tensor | None, pred_c2w: Tensor | None,
                lpips_model=None) -> dict:
    """Every metric the sample supports. renders: (Vt, 3, H, W); probs: (Vc, 1, H, W) or None; pred_c2w: (V, 4, 4)."""
    targets = item["images"][vc:].float()
    gt_masks, clean = item.get("motion_masks"), item.get("clean_images")
    with_masks = probs is not None and gt_masks is not None
    with_pose = pred_c2w is not None and "c2w" in item
    return scene_metrics(
        renders, targets,
        target_motion_masks=gt_masks[vc:] if gt_masks is not None else None,
        clean_targets=clean[vc:] if clean is not None else None,
        pred_input_masks=probs if with_masks else None,
        gt_input_masks=gt_masks[:vc] if with_masks else None,
        pred_c2w=pred_c2w if with_pose else None, gt_c2w=item["c2w"].float() if with_pose else None,
        lpips_model=lpips_model)


def mean_colour_renders(item: dict, vc: int) -> Tensor:
    """The mean-colour baseline: every target is the mean colour of the context views. -> (Vt, 3, H, W)."""
    imgs = item["images"].float()
    mean = imgs[:vc].mean(dim=(0, 2, 3))  # (3,)
    return mean[None, :, None, None].expand_as(imgs[vc:]).clone()


def copy_nearest_renders(item: dict, vc: int) -> Tensor:
    """The copy-nearest baseline: every target is the context view whose camera centre is closest to its own (ties:
    the first). Needs the dataset's cameras (``c2w``). -> (Vt, 3, H, W)."""
    imgs, centres = item["images"].float(), item["c2w"].float()[:, :3, 3]  # (V, 3, H, W), (V, 3)
    nearest = torch.cdist(centres[vc:], centres[:vc]).argmin(dim=1)  # (Vt,)
    return imgs[:vc][nearest].clone()


BASELINES = {"mean_colour": mean_colour_renders, "copy_nearest": copy_nearest_renders}


def identity_pose_errors(item: dict) -> dict:
    """Pose errors of the trivial prediction 'every camera equals view 0' (what an untrained estimator outputs)."""
    v = item["c2w"].shape[0]
    return pose_metrics(torch.eye(4).expand(v, 4, 4).clone(), item["c2w"].float())


def scene_indices(dataset, max_scenes: int = 0, progress: bool = True, desc: str = "eval"):
    """Indices of the first ``max_scenes`` scenes (all when <= 0), with a progress bar on stderr if ``progress``."""
    it = range(len(dataset) if max_scenes <= 0 else min(max_scenes, len(dataset)))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=desc, unit="scene", file=sys.stderr, dynamic_ncols=True, leave=False)
    return it


@torch.no_grad()
def evaluate(dataset, num_context: int, pipe=None, baseline: str = "", lpips_model=None, max_scenes: int = 0,
             progress: bool = True, desc: str = "eval", apply_mae: bool | None = None) -> dict:
    """Average metrics over ``dataset`` (eval mode). ``pipe`` = a loaded Pipeline (``apply_mae``: see Pipeline.run),
    or ``baseline`` = "mean_colour" / "copy_nearest" (renders; with identity-pose camera errors).
    -> MetricsAggregator.summary()."""
    if (pipe is None) == (not baseline):
        raise ValueError("evaluate: give exactly one of pipe and baseline")
    if baseline and baseline not in BASELINES:
        raise ValueError(f"evaluate: unknown baseline {baseline!r}; one of {', '.join(BASELINES)}")
    agg = MetricsAggregator()
    for i in scene_indices(dataset, max_scenes, progress, desc):
        item = dataset[i]
        if pipe is not None:
            _, m = score_scene(pipe, item, lpips_model, apply_mae)
        else:
            m = metrics_for(item, num_context, BASELINES[baseline](item, num_context), None, None, lpips_model)
            if "c2w" in item:
                m.update(identity_pose_errors(item))
        agg.add(f"{i:05d}_{item['scene']}", m)
    return agg.summary()
