"""Evaluation metrics: image quality on full images and static regions, motion masks, poses.

Conventions
* Images are float ``(N, 3, H, W)`` in [0, 1]; masks ``(N, 1, H, W)`` with 1 = moving. A mask pixel counts as moving
  when its value is >= 0.5 (so soft/resized masks work), and the **static region** is everything else.
* SSIM is scikit-image's Gaussian SSIM (sigma 1.5, 11x11, sample covariance, data range 1): the mean of the 'valid'
  SSIM map, which equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  data_range=1, channel_axis=-1)``. **Static SSIM** is the mean of the same map over static pixels (the mask cropped
  by the 5-pixel border the valid map drops), so an empty motion mask gives exactly the full-image SSIM.
* A value that cannot be computed is NaN in per-image tensors and ``None`` in dicts (e.g. static PSNR of a target
  whose mask covers everything, LPIPS without weights). ``None`` is left out of means and shown as "n/a"; it is never
  replaced by an approximation.
* Scene values are means over the scene's target (or input) views; dataset values are means over scenes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from wildrayzer.geometry import pose_errors_sim3
from wildrayzer.image_ops import psnr, ssim_map

SSIM_WINDOW = 11
MASK_THRESHOLD = 0.5

# Canonical order and console/report labels (ASCII: consoles may not be UTF-8) of every metric key a scene may hold.
METRIC_LABELS: dict[str, str] = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "psnr_static": "PSNR static",
    "ssim_static": "SSIM static",
    "lpips_static": "LPIPS static",
    "psnr_clean": "PSNR vs clean",
    "mask_iou": "mask IoU",
    "mask_iou_pooled": "mask IoU pooled",
    "mask_precision": "mask precision",
    "mask_recall": "mask recall",
    "pose_rot_deg": "rotation error (deg)",
    "pose_trans_rel": "translation error (rel)",
}
LOWER_IS_BETTER = frozenset({"lpips", "lpips_static", "pose_rot_deg", "pose_trans_rel"})
_DECIMALS = {"psnr": 2, "psnr_static": 2, "psnr_clean": 2, "pose_rot_deg": 2}


def _check_pair(pred: Tensor, gt: Tensor, name: str) -> None:
    if pred.shape != gt.shape or pred.dim() != 4:
        raise ValueError(f"{name}: expected two (N, C, H, W) tensors of equal shape, got {tuple(pred.shape)} "
                         f"and {tuple(gt.shape)}")


def _static_weights(motion_mask: Tensor, like: Tensor) -> Tensor:
    """motion_mask: (N, 1, H, W), 1 = moving -> (N, 1, H, W) float, 1 = static."""
    if motion_mask.dim() != 4 or motion_mask.shape[1] != 1 or motion_mask.shape[-2:] != like.shape[-2:] \
            or motion_mask.shape[0] != like.shape[0]:
        raise ValueError(f"motion mask must be (N, 1, H, W) matching images {tuple(like.shape)}, "
                         f"got {tuple(motion_mask.shape)}")
    return (motion_mask < MASK_THRESHOLD).to(like.dtype)


def psnr_full(pred: Tensor, gt: Tensor) -> Tensor:
    """pred, gt: (N, 3, H, W) in [0, 1] -> (N,) PSNR in dB."""
    _check_pair(pred, gt, "psnr_full")
    return psnr(pred.float(), gt.float())


def psnr_static(pred: Tensor, gt: Tensor, motion_mask: Tensor) -> Tensor:
    """PSNR over static pixels. pred, gt: (N, 3, H, W); motion_mask: (N, 1, H, W) -> (N,), NaN if none static."""
    _check_pair(pred, gt, "psnr_static")
    w = _static_weights(motion_mask, pred.float())
    out = psnr(pred.float(), gt.float(), mask=w)
    return torch.where(w.flatten(1).sum(1) > 0, out, torch.full_like(out, float("nan")))


def ssim_valid_map(pred: Tensor, gt: Tensor) -> Tensor:
    """pred, gt: (N, 3, H, W) -> (N, 1, H - 10, W - 10), scikit-image's (un-padded) Gaussian SSIM map."""
    _check_pair(pred, gt, "ssim")
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(pred.shape[-2:])}")
    return ssim_map(pred.double(), gt.double(), window=SSIM_WINDOW, sigma=1.5, data_range=1.0, same_size=False)


def ssim_full(pred: Tensor, gt: Tensor) -> Tensor:
    """pred, gt: (N, 3, H, W) in [0, 1] -> (N,) SSIM, equal to scikit-image's (see module docstring)."""
    return ssim_valid_map(pred, gt).flatten(1).mean(1).float()


def ssim_static(pred: Tensor, gt: Tensor, motion_mask: Tensor) -> Tensor:
    """Mean SSIM map over static pixels. pred, gt: (N, 3, H, W); motion_mask: (N, 1, H, W) -> (N,), NaN if none."""
    smap = ssim_valid_map(pred, gt)
    b = SSIM_WINDOW // 2
    w = _static_weights(motion_mask, pred)[..., b:-b, b:-b].to(smap.dtype)
    count = w.flatten(1).sum(1)
    out = (smap * w).flatten(1).sum(1) / count.clamp_min(1.0)
    return torch.where(count > 0, out, torch.full_like(out, float("nan"))).float()


def lpips_static(lpips_model, pred: Tensor, gt: Tensor, motion_mask: Tensor) -> Tensor:
    """Mean of the spatial LPIPS map over static pixels. pred, gt: (N, 3, H, W); mask (N, 1, H, W) -> (N,)."""
    _check_pair(pred, gt, "lpips_static")
    w = _static_weights(motion_mask, pred.float())
    lmap = lpips_model(pred.float(), gt.float(), spatial=True)  # (N, 1, H, W)
    count = w.flatten(1).sum(1)
    out = (lmap * w).flatten(1).sum(1) / count.clamp_min(1.0)
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))


def mask_scores(pred_mask: Tensor, gt_mask: Tensor) -> dict[str, list[float | None]]:
    """Per-view motion-mask IoU, precision and recall (moving = positive class).

    pred_mask: (N, 1, H, W) predicted probabilities or binary; gt_mask: (N, 1, H, W) binary. Both are thresholded
    at 0.5. Empty masks: a ratio whose denominator is 0 is undefined and returned as ``None`` (left out of means) —
    precision when nothing is predicted, recall when nothing moves — except IoU of two empty masks, which is 1.0
    (perfect agreement that nothing moves). A non-empty prediction on an empty GT has IoU 0 and precision 0.
    """
    if pred_mask.shape != gt_mask.shape or pred_mask.dim() != 4 or pred_mask.shape[1] != 1:
        raise ValueError(f"mask_scores: expected two (N, 1, H, W) masks, got {tuple(pred_mask.shape)} and "
                         f"{tuple(gt_mask.shape)}")
    p = (pred_mask >= MASK_THRESHOLD).flatten(1)
    g = (gt_mask >= MASK_THRESHOLD).flatten(1)
    tp = (p & g).sum(1).tolist()
    fp = (p & ~g).sum(1).tolist()
    fn = (~p & g).sum(1).tolist()
    out: dict[str, list[float | None]] = {"mask_iou": [], "mask_precision": [], "mask_recall": []}
    for t, f_p, f_n in zip(tp, fp, fn):
        union = t + f_p + f_n
        out["mask_iou"].append(t / union if union > 0 else 1.0)
        out["mask_precision"].append(t / (t + f_p) if t + f_p > 0 else None)
        out["mask_recall"].append(t / (t + f_n) if t + f_n > 0 else None)
    return out


def mask_iou_pooled(pred_mask: Tensor, gt_mask: Tensor) -> float | None:
    """One IoU over all views together (intersections and unions summed): a view where nothing moves and nothing is
    predicted adds nothing, instead of the 1.0 it scores in the per-view mean. None when every view is empty in both.
    pred_mask, gt_mask: (N, 1, H, W), thresholded at 0.5 like :func:`mask_scores`."""
    if pred_mask.shape != gt_mask.shape:
        raise ValueError(f"mask_iou_pooled: shapes differ, {tuple(pred_mask.shape)} vs {tuple(gt_mask.shape)}")
    p, g = pred_mask >= MASK_THRESHOLD, gt_mask >= MASK_THRESHOLD
    union = int((p | g).sum())
    return int((p & g).sum()) / union if union else None


def pose_metrics(pred_c2w: Tensor, gt_c2w: Tensor) -> dict[str, float]:
    """pred_c2w, gt_c2w: (V, 4, 4) one scene, V >= 2 -> {"pose_rot_deg", "pose_trans_rel"} after Sim(3) alignment.

    See :func:`wildrayzer.geometry.pose_errors_sim3`: rotation is the mean geodesic error of poses relative to view 0,
    translation the mean centre error after Umeyama alignment divided by the GT trajectory extent (scale-free).
    """
    if pred_c2w.shape != gt_c2w.shape or pred_c2w.dim() != 3 or pred_c2w.shape[-2:] != (4, 4):
        raise ValueError(f"pose_metrics: expected two (V, 4, 4) tensors, got {tuple(pred_c2w.shape)} and "
                         f"{tuple(gt_c2w.shape)}")
    if pred_c2w.shape[0] < 2:
        raise ValueError("pose_metrics: need at least 2 views (poses are relative to view 0)")
    err = pose_errors_sim3(pred_c2w, gt_c2w)
    return {"pose_rot_deg": err["rotation_deg"], "pose_trans_rel": err["translation_rel"]}


def _finite_mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None


def scene_metrics(
    renders: Tensor,  # (T, 3, H, W) rendered targets in [0, 1]
    targets: Tensor,  # (T, 3, H, W) ground-truth target photos
    *,
    target_motion_masks: Tensor | None = None,  # (T, 1, H, W) GT masks of the targets, 1 = moving
    clean_targets: Tensor | None = None,  # (T, 3, H, W) synthetic GT without transients
    pred_input_masks: Tensor | None = None,  # (Vc, 1, H, W) predicted motion probabilities of the inputs
    gt_input_masks: Tensor | None = None,  # (Vc, 1, H, W) GT motion masks of the inputs
    pred_c2w: Tensor | None = None,  # (V, 4, 4) predicted cameras
    gt_c2w: Tensor | None = None,  # (V, 4, 4) GT cameras of the same views
    lpips_model=None,  # wildrayzer.infer.lpips.LPIPS or None
) -> dict[str, float | None]:
    """All metrics of one scene as a flat dict of floats (means over views).

    Keys appear only where their inputs are given (static metrics need ``target_motion_masks``, ``psnr_clean``
    needs ``clean_targets``, mask scores need both input masks, pose errors both camera sets), except ``lpips`` (and
    ``lpips_static`` with masks), which are ``None`` when no LPIPS model is loaded.
    """
    renders, targets = renders.detach().float().clamp(0, 1), targets.detach().float()
    out: dict[str, float | None] = {
        "psnr": _finite_mean(psnr_full(renders, targets).tolist()),
        "ssim": _finite_mean(ssim_full(renders, targets).tolist()),
        "lpips": None if lpips_model is None else _finite_mean(lpips_model(renders, targets).tolist()),
    }
    if target_motion_masks is not None:
        m = target_motion_masks.detach().float()
        out["psnr_static"] = _finite_mean(psnr_static(renders, targets, m).tolist())
        out["ssim_static"] = _finite_mean(ssim_static(renders, targets, m).tolist())
        out["lpips_static"] = None if lpips_model is None else _finite_mean(
            lpips_static(lpips_model, renders, targets, m).tolist())
    if clean_targets is not None:
        out["psnr_clean"] = _finite_mean(psnr_full(renders, clean_targets.detach().float()).tolist())
    if (pred_input_masks is None) != (gt_input_masks is None):
        raise ValueError("scene_metrics: pred_input_masks and gt_input_masks must be given together")
    if pred_input_masks is not None:
        pred_m, gt_m = pred_input_masks.detach().float(), gt_input_masks.detach().float()
        for key, vals in mask_scores(pred_m, gt_m).items():
            out[key] = _finite_mean(vals)
        out["mask_iou_pooled"] = mask_iou_pooled(pred_m, gt_m)
    if (pred_c2w is None) != (gt_c2w is None):
        raise ValueError("scene_metrics: pred_c2w and gt_c2w must be given together")
    if pred_c2w is not None:
        out.update(pose_metrics(pred_c2w.detach(), gt_c2w.detach()))
    return out


class MetricsAggregator:
    """Collects per-scene metric dicts and averages them over scenes, ``None``-aware.

    >>> agg = MetricsAggregator(); agg.add("s1", {"psnr": 20.0, "lpips": None}); agg.means()
    {'psnr': 20.0, 'lpips': None}
    """

    def __init__(self) -> None:
        self.scenes: dict[str, dict[str, float | None]] = {}

    def add(self, scene: str, metrics: Mapping[str, float | int | None]) -> None:
        """Record one scene; NaN/inf become ``None``. A scene name may be added only once."""
        if scene in self.scenes:
            raise ValueError(f"MetricsAggregator: scene {scene!r} added twice")
        clean: dict[str, float | None] = {}
        for key, value in metrics.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise TypeError(f"MetricsAggregator: metric {key!r} of scene {scene!r} is {type(value).__name__}, "
                                "expected float or None")
            clean[key] = None if value is None or not math.isfinite(value) else float(value)
        self.scenes[scene] = clean

    def update(self, scenes: Mapping[str, Mapping[str, float | int | None]]) -> None:
        """Add many scenes at once, e.g. the per-rank results gathered on rank 0."""
        for scene, metrics in scenes.items():
            self.add(scene, metrics)

    def keys(self) -> list[str]:
        """Every key seen, canonical ones first in :data:`METRIC_LABELS` order, then others sorted."""
        seen = {k for m in self.scenes.values() for k in m}
        return [k for k in METRIC_LABELS if k in seen] + sorted(seen - set(METRIC_LABELS))

    def counts(self) -> dict[str, int]:
        """Number of scenes with a value (not ``None``) per key."""
        return {k: sum(m.get(k) is not None for m in self.scenes.values()) for k in self.keys()}

    def means(self) -> dict[str, float | None]:
        """Mean over scenes per key; ``None`` when no scene has a value (e.g. LPIPS without weights)."""
        return {k: _finite_mean(m.get(k) for m in self.scenes.values()) for k in self.keys()}

    def summary(self) -> dict:
        """JSON-ready ``{"num_scenes", "mean", "count", "scenes"}`` (``None`` serialises as ``null``)."""
        return {"num_scenes": len(self.scenes), "mean": self.means(), "count": self.counts(),
                "scenes": {s: dict(m) for s, m in self.scenes.items()}}


def format_value(key: str, value: float | None) -> str:
    """One metric for display: "n/a" for ``None`` (or NaN), PSNR/degrees with 2 decimals, others with 4."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{_DECIMALS.get(key, 4)}f}"


def format_metrics_table(means: Mapping[str, float | None], counts: Mapping[str, int] | None = None,
                         title: str = "WildRayZer evaluation") -> str:
    """Console table of dataset means: one row per metric ("n/a" where unavailable), optional scene counts."""
    keys = [k for k in METRIC_LABELS if k in means] + sorted(set(means) - set(METRIC_LABELS))
    head = ["metric", "mean", "better"] + ([] if counts is None else ["scenes"])
    rows = [[METRIC_LABELS.get(k, k), format_value(k, means[k]),
             "lower" if k in LOWER_IS_BETTER else "higher" if k in METRIC_LABELS else ""]
            + ([] if counts is None else [str(counts.get(k, 0))]) for k in keys]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(r: list[str]) -> str:
        cells = [f" {c:<{w}} " if i == 0 else f" {c:>{w}} " for i, (c, w) in enumerate(zip(r, widths))]
        return "|" + "|".join(cells) + "|"

    return "\n".join([title, line, fmt(head), line, *[fmt(r) for r in rows], line])
