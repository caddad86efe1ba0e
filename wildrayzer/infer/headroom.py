"""How much can motion masking win on a dataset? Static-region PSNR of one model under four context conditions.

Used by ``wildrayzer bench headroom``. Every condition renders the same targets from the same model; only what the
scene encoder sees of the context views changes:

* ``as_given``         the context photos, no token masking (what RayZer without masks gets);
* ``own_masks``        noise-token masking with the model's own predicted masks (needs a motion estimator);
* ``gt_masks``         noise-token masking with the ground-truth motion masks (an oracle mask estimator; for a
                       model that never trained its noise token, e.g. stage 1, this is the cost of dropping tokens);
* ``transient_free``   the context views rendered without their transients (``clean_images``), no masking: the
                       ceiling for any masking method, which can at best remove the transient, never restore what it
                       hid.
* ``mix_<a>``          (optional, ``mix``) noise-token masking with ``a * GT + (1 - a) * own`` motion probabilities:
                       masks of intermediate quality, to see how good a mask estimator must be before masking pays
                       (each such condition also reports the mixed masks' IoU against the ground truth).

``transient_free - as_given`` is the static-region PSNR that transients in the context cost the model; when it is
small, a masked model cannot beat the unmasked one by more than that, however good its masks.
"""

from __future__ import annotations

import statistics

import torch

from ..errors import UserError
from .evaluate import metrics_for, scene_indices
from .metrics import MetricsAggregator
from .pipeline import item_cameras

CONDITIONS = ("as_given", "own_masks", "gt_masks", "transient_free")


def mix_condition(a: float) -> str:
    """The condition name of masks mixed with weight ``a`` on the ground truth, e.g. ``mix_0.25``."""
    return f"mix_{a:g}"


def paired_difference(summary: dict, condition: str, key: str = "psnr_static",
                      base: str = "as_given") -> tuple[float, float] | None:
    """Mean and standard error over scenes of ``condition - base`` for metric ``key``, from a
    :func:`masking_headroom` result (the same scenes under both conditions: a paired difference, free of the
    scene-to-scene spread both share). None when either condition is missing or fewer than two scenes have both."""
    if condition not in summary or base not in summary:
        return None
    a, b = summary[condition]["scenes"], summary[base]["scenes"]
    diffs = [a[s][key] - b[s][key] for s in a if s in b and a[s].get(key) is not None and b[s].get(key) is not None]
    if len(diffs) < 2:
        return None
    return statistics.fmean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5


def _render(pipe, images, sem, vc: int, apply_mae: bool, motion_probs=None, cameras=None):
    """images: (1, V, 3, H, W) on the device; sem: the context views' semantic features or None; motion_probs:
    (1, Vc, 1, H, W) or None -> (renders (Vt, 3, H, W), c2w (V, 4, 4)) on the CPU."""
    if motion_probs is not None:
        motion_probs = motion_probs.to(pipe.device, torch.float32)
    return _renders_c2w(pipe.model(images, vc, semantic_feats=sem, motion_probs=motion_probs, apply_mae=apply_mae,
                                   cameras=cameras))


def _renders_c2w(out: dict):
    """A batch-of-one prediction dict -> (renders (Vt, 3, H, W), c2w (V, 4, 4)) on the CPU."""
    return out["renders"][0].float().cpu().clamp(0, 1), out["cameras"]["c2w"][0].float().cpu()


@torch.no_grad()
def masking_headroom(pipe, dataset, max_scenes: int = 0, progress: bool = True, mix: tuple[float, ...] = ()) -> dict:
    """pipe: a loaded :class:`Pipeline`; dataset: eval items with ``motion_masks`` and ``clean_images`` (the synthetic
    dynamic test set); mix: weights in [0, 1] of the ground truth in the ``mix_<a>`` conditions (needs a motion
    estimator). -> {condition: MetricsAggregator summary} for the conditions the model supports; the masked ones
    that use the model's masks also carry mask scores (``mask_iou_pooled``, ...)."""
    vc = pipe.num_context
    if len(dataset) == 0:
        raise UserError("headroom: the dataset has no scenes")
    bad = [a for a in mix if not 0.0 <= a <= 1.0]
    if bad:
        raise UserError(f"headroom: mix weights must lie in [0, 1]; got {bad[0]:g}")
    if mix and pipe.model.motion is None:
        raise UserError("headroom: mixing with the model's own masks needs a model with a motion estimator (stage 2 "
                        "or 3)")
    first = dataset[0]
    if first.get("motion_masks") is None or first.get("clean_images") is None:
        raise UserError("headroom needs ground-truth motion masks and transient-free images (clean_images), which "
                        "only the synthetic dynamic sets have; point data.root at e.g. data/synthetic/dynamic_re10k")
    conditions = [c for c in CONDITIONS if c != "own_masks" or pipe.model.motion is not None]
    weights = {mix_condition(a): float(a) for a in mix}  # the condition name of each weight (repeats: once)
    conditions += list(weights)
    aggs = {c: MetricsAggregator() for c in conditions}
    # The masked conditions mask (apply_mae=True) whatever the checkpoint was trained with.
    for i in scene_indices(dataset, max_scenes, progress, "headroom"):
        item = first if i == 0 else dataset[i]
        images = item["images"][None].to(pipe.device, torch.float32)  # (1, V, 3, H, W)
        sem = pipe.semantic_features(images[:, :vc])  # shared by every condition that sees the real context
        cams = item_cameras(pipe.model, item, pipe.device)
        # The as-given render; its context motion probabilities (at the images' resolution) are the own masks.
        given = pipe.run(images, cameras=cams, apply_mae=False, semantic_feats=sem)
        own = given["motion_probs"][0, :vc].float().cpu() if given["motion_probs"] is not None else None
        gt = item["motion_masks"][:vc].float()  # (Vc, 1, H, W)
        for c in conditions:
            probs = None
            if c == "transient_free":
                clean = images.clone()
                clean[0, :vc] = item["clean_images"][:vc].to(pipe.device, torch.float32)
                renders, c2w = _render(pipe, clean, pipe.semantic_features(clean[:, :vc]), vc, apply_mae=False,
                                       cameras=cams)
            elif c == "gt_masks":
                renders, c2w = _render(pipe, images, sem, vc, True, gt[None], cams)
            elif c == "as_given":
                renders, c2w = _renders_c2w(given)
            elif c == "own_masks":  # the model masks with its own masks, as in inference
                renders, c2w = _render(pipe, images, sem, vc, apply_mae=True, cameras=cams)
                probs = own
            else:  # mix_<a>: the own masks mixed with the ground truth
                probs = weights[c] * gt + (1 - weights[c]) * own
                renders, c2w = _render(pipe, images, sem, vc, True, probs[None], cams)
            aggs[c].add(f"{i:05d}_{item['scene']}", metrics_for(item, vc, renders, probs, c2w))
    return {c: a.summary() for c, a in aggs.items()}
