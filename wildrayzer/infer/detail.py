"""Is a renderer limited by its geometry or by the detail it keeps? Scores of one model on a posed static set.

Used by ``wildrayzer bench detail``. Per scene (context views first, then targets), each a mean over images:

* ``target``            PSNR of the novel views, as :func:`wildrayzer.infer.evaluate.evaluate` scores them;
* ``context``           PSNR of the context views re-rendered from the same scene latents at their own cameras. A
                        renderer whose novel views suffer from wrong geometry renders its own inputs much better than
                        novel views; one whose scene code drops detail does no better there;
* ``target_coarse``     PSNR of the novel views with render and ground truth both averaged over patch-sized blocks
                        (one colour per token): how right the layout and colours are, whatever the finer detail
                        (never below ``target``: averaging cannot raise the squared error);
* ``patch_means``       PSNR of an oracle that paints every block of each target with its true mean colour and
                        nothing finer: the best a renderer that gets each token's colour and no sub-token detail can
                        score; ``half_patch_means``: the same with blocks half a patch wide;
* ``copy_nearest``      PSNR of copying the context view nearest to each target (the baseline).

``target`` near ``patch_means``, ``target_coarse`` far above it and ``context`` no better than ``target`` read: the
model places the coarse scene right and loses the detail below a token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .evaluate import copy_nearest_renders, scene_indices
from .metrics import MetricsAggregator, psnr_full
from .pipeline import item_cameras

KEYS = ("target", "context", "target_coarse", "patch_means", "half_patch_means", "copy_nearest")


def block_means(images: Tensor, block: int) -> Tensor:
    """images: (N, C, H, W) -> (N, C, H, W): every ``block`` x ``block`` block painted with its mean colour."""
    if block < 1 or images.shape[-1] % block or images.shape[-2] % block:
        raise ValueError(f"block_means: block {block} must divide the image size {tuple(images.shape[-2:])}")
    return F.interpolate(F.avg_pool2d(images, block), scale_factor=block, mode="nearest")


def _mean_psnr(pred: Tensor, gt: Tensor) -> float:
    """pred, gt: (N, 3, H, W) in [0, 1] -> the mean over images of their PSNR."""
    return psnr_full(pred, gt).mean().item()


def scene_detail_scores(pipe, item: dict) -> dict:
    """One scene's :data:`KEYS` for a loaded :class:`~wildrayzer.infer.pipeline.Pipeline` (eval mode)."""
    vc, patch = pipe.num_context, pipe.model.patch
    images = item["images"][None]  # (1, V, 3, H, W)
    if images.shape[1] <= vc:
        raise UserError(f"detail: scene {item.get('scene')} has no target views (needs more than {vc} views)")
    out = pipe.run(images, cameras=item_cameras(pipe.model, item, pipe.device), render_inputs=True)
    renders = out["renders"][0].float().cpu().clamp(0, 1)  # (Vt, 3, H, W)
    inputs = out["input_renders"][0].float().cpu().clamp(0, 1)  # (Vc, 3, H, W)
    gt = item["images"].float()
    targets = gt[vc:]
    half = max(patch // 2, 1)
    return {"target": _mean_psnr(renders, targets), "context": _mean_psnr(inputs, gt[:vc]),
            "target_coarse": _mean_psnr(F.avg_pool2d(renders, patch), F.avg_pool2d(targets, patch)),
            "patch_means": _mean_psnr(block_means(targets, patch), targets),
            "half_patch_means": _mean_psnr(block_means(targets, half), targets),
            "copy_nearest": _mean_psnr(copy_nearest_renders(item, vc), targets) if "c2w" in item else None}


@torch.no_grad()
def detail_scores(pipe, dataset, max_scenes: int = 0, progress: bool = True) -> dict:
    """pipe: a loaded Pipeline; dataset: eval items (``images``, and ``c2w``/``fxfycxcy`` for copy-nearest and posed
    models) -> MetricsAggregator summary of :data:`KEYS` over the first ``max_scenes`` scenes (all when <= 0)."""
    if len(dataset) == 0:
        raise UserError("detail: the dataset has no scenes")
    agg = MetricsAggregator()
    for i in scene_indices(dataset, max_scenes, progress, "detail"):
        item = dataset[i]
        agg.add(f"{i:05d}_{item['scene']}", scene_detail_scores(pipe, item))
    return agg.summary()
