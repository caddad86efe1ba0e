"""Pseudo-motion masks: where a frozen static (stage-1) render disagrees with the photo, something moved.

Per scene (T target photos and their static renders, plus semantic features of both):

1. dissimilarity maps: SSIM (1 - SSIM, window ``pseudolabel.ssim_window``; the photo is first blurred to the
   render's sharpness, see :func:`match_render_blur`) and semantic (1 - cosine of backbone
   features, upsampled to full resolution); each z-scored per frame (mean / std over the frame's pixels: a frame
   whose render is poor everywhere is not all "moving"), combined ``semantic_weight * sem + ssim_weight * ssim``;
2. co-segmentation (:mod:`wildrayzer.pseudolabel.cosegment`): k-means (``kmeans_k``, ``kmeans_iters``, seeded) on
   the photos' semantic features pooled over the scene; clusters in the top ``top_cluster_fraction`` by mean score
   that are flagged (mean score > ``score_threshold``) in at least ``min_frame_votes`` frames are dynamic;
3. candidate mask = pixels with score > ``score_threshold``, grown into the connected regions of dynamic clusters
   they touch (completing objects whose interior matches poorly); morphological opening then closing
   (``morph_kernel``);
4. GrabCut (OpenCV, ``grabcut_iters``) seeded by the mask: its erosion is sure foreground, the rest of it probable
   foreground, a band of ``morph_kernel`` pixels around it probable background, everything else sure background;
5. reliability: the render's PSNR against the photo must reach ``training.psnr_filter_threshold``, otherwise the
   frame is marked unreliable (it should contribute no mask loss).

All functions are pure (tensors in, tensors out); the CLI (:mod:`wildrayzer.pseudolabel.cli`) adds I/O and the
on-disk label export (:mod:`wildrayzer.pseudolabel.cache`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ..errors import ConfigError
from ..image_ops import psnr, ssim_map
from .cosegment import cosegment


@dataclass
class PseudoMasks:
    masks: Tensor  # (T, 1, H, W) float32 in {0, 1}; 1 = moving
    scores: Tensor  # (T, 1, H, W) combined z-scored dissimilarity
    reliable: Tensor  # (T,) bool: render PSNR >= training.psnr_filter_threshold
    psnr: Tensor  # (T,) dB, static render vs photo
    dynamic_clusters: Tensor  # (D,) int64 ids of the clusters the co-segmentation judged dynamic
    cosegment: Tensor  # (T, 1, H, W) bool: pixels of dynamic clusters in the frames where they are flagged


def zscore(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-frame z-score. x: (T, 1, H, W) -> (T, 1, H, W), (x - mean) / (std + eps) over each frame's pixels."""
    flat = rearrange(x, "t c h w -> t (c h w)")
    z = (flat - flat.mean(dim=1, keepdim=True)) / (flat.std(dim=1, keepdim=True) + eps)
    return z.view_as(x)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """x: (N, C, H, W) -> (N, C, H, W) separable Gaussian blur, reflect padding (radius 3 sigma)."""
    r = max(1, int(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def match_render_blur(photos: Tensor, renders: Tensor, sigmas=(0.5, 1.0, 1.5, 2.0)) -> Tensor:
    """Blur each photo to the render's sharpness: of {no blur} U ``sigmas``, the Gaussian that brings it closest (MSE)
    to its render. photos, renders: (T, 3, H, W) -> (T, 3, H, W). A static model renders low-passed images; without
    this, SSIM reads the lost fine texture as change everywhere in textured static regions."""
    best, err = photos, ((photos - renders) ** 2).flatten(1).mean(1)
    for sigma in sigmas:
        blurred = gaussian_blur(photos, float(sigma))
        e = ((blurred - renders) ** 2).flatten(1).mean(1)
        best = torch.where((e < err)[:, None, None, None], blurred, best)
        err = torch.minimum(err, e)
    return best


def needs_render_features(pl_cfg) -> bool:
    """Whether the score reads the renders' semantic features (not with ``semantic_weight`` 0: SSIM alone, as the
    tiny configs score; a backbone pass over every render saved)."""
    return pl_cfg.semantic_weight != 0


def dissimilarity_scores(photos: Tensor, renders: Tensor, photo_feats: Tensor, render_feats: Tensor | None,
                         pl_cfg) -> Tensor:
    """photos, renders: (T, 3, H, W) in [0, 1]; photo_feats, render_feats: (T, C, h, w) (render_feats may be None
    when :func:`needs_render_features` is False) -> combined score (T, 1, H, W) = semantic_weight * z(1 - cos) +
    ssim_weight * z(1 - SSIM)."""
    height, width = photos.shape[-2:]
    photos = match_render_blur(photos.float(), renders.float(), tuple(pl_cfg.render_blur_sigmas))
    ssim_d = 1.0 - ssim_map(photos, renders.float(), window=int(pl_cfg.ssim_window))
    if not needs_render_features(pl_cfg):  # the semantic term weighs 0: the same score without the features
        return pl_cfg.ssim_weight * zscore(ssim_d)
    if render_feats is None:
        raise ValueError(f"pseudolabel.semantic_weight={pl_cfg.semantic_weight} needs the renders' features")
    cos = (F.normalize(photo_feats.float(), dim=1, eps=1e-6) * F.normalize(render_feats.float(), dim=1, eps=1e-6))
    sem_d = F.interpolate(1.0 - cos.sum(1, keepdim=True), size=(height, width), mode="bilinear",
                          align_corners=False)
    return pl_cfg.semantic_weight * zscore(sem_d) + pl_cfg.ssim_weight * zscore(ssim_d)


def _ellipse(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def grow_into_clusters(cluster_mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Connected regions of ``cluster_mask`` that touch a seed pixel, united with the seeds.

    cluster_mask, seeds: (H, W) uint8 {0, 1} -> (H, W) uint8 {0, 1}. A dynamic cluster may also cover static
    things of the same appearance elsewhere in the frame; only its regions that the dissimilarity supports count.
    """
    n, comp = cv2.connectedComponents(cluster_mask, connectivity=8)
    if n <= 1:
        return seeds
    keep = np.zeros(n, bool)
    keep[np.unique(comp[seeds > 0])] = True
    keep[0] = False
    return (keep[comp] | (seeds > 0)).astype(np.uint8)


def morphology(mask: np.ndarray, kernel: int) -> np.ndarray:
    """mask: (H, W) uint8 {0, 1} -> opened then closed with an elliptic ``kernel`` x ``kernel`` element."""
    if kernel <= 1:
        return mask
    el = _ellipse(kernel)
    return cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, el), cv2.MORPH_CLOSE, el)


def grabcut_refine(photo: np.ndarray, mask: np.ndarray, band: int, iters: int) -> np.ndarray:
    """Snap a coarse mask to image boundaries with GrabCut, seeded by the mask itself.

    photo: (H, W, 3) uint8; mask: (H, W) uint8 {0, 1} -> (H, W) uint8 {0, 1}. Sure foreground = mask eroded by
    ``band``; probable foreground = the rest of the mask; probable background = ``band`` pixels around it; sure
    background elsewhere, so the result can only move within that band. GrabCut runs on the band's bounding box.
    """
    if mask.sum() == 0 or iters <= 0:
        return mask
    el = _ellipse(2 * band + 1)
    outer = cv2.dilate(mask, el)
    if outer.all():  # no sure background left to learn a background model from
        return mask
    gc = np.full(mask.shape, cv2.GC_BGD, np.uint8)
    gc[outer > 0] = cv2.GC_PR_BGD
    gc[mask > 0] = cv2.GC_PR_FGD
    gc[cv2.erode(mask, el) > 0] = cv2.GC_FGD
    ys, xs = np.nonzero(outer)
    h, w = mask.shape
    y0, y1 = max(ys.min() - band, 0), min(ys.max() + band + 1, h)
    x0, x1 = max(xs.min() - band, 0), min(xs.max() + band + 1, w)
    crop = np.ascontiguousarray(gc[y0:y1, x0:x1])
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut initialises its colour models with k-means: keep it deterministic
    try:
        cv2.grabCut(np.ascontiguousarray(photo[y0:y1, x0:x1]), crop, None, bgd, fgd, int(iters),
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # e.g. too few samples of one side for a colour model: keep the coarse mask
        return mask
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = ((crop == cv2.GC_FGD) | (crop == cv2.GC_PR_FGD)).astype(np.uint8)
    return out


def build_pseudo_masks(photos: Tensor, renders: Tensor, photo_feats: Tensor, render_feats: Tensor | None, cfg,
                       seed: int = 0) -> PseudoMasks:
    """The pseudo-mask constructor for one scene (see the module docstring).

    photos, renders: (T, 3, H, W) in [0, 1]; photo_feats, render_feats: (T, C, h, w) from the same frozen semantic
    backbone (render_feats None: not needed, see :func:`needs_render_features`); ``cfg`` the full config
    (``pseudolabel`` and ``training.psnr_filter_threshold`` are read).
    """
    pl = cfg.pseudolabel
    if photos.shape != renders.shape or photos.ndim != 4:
        raise ValueError(f"photos {tuple(photos.shape)} and renders {tuple(renders.shape)} must both be (T, 3, H, W)")
    if photo_feats.shape[1] == 0:
        raise ConfigError("pseudo-masks need semantic features but semantic.backbone=none; set "
                          "semantic.backbone=efficientnet_lite0 (offline) or dinov3")
    photos, renders = photos.detach().float().cpu(), renders.detach().float().cpu().clamp(0, 1)
    photo_feats = photo_feats.detach().float().cpu()
    render_feats = None if render_feats is None else render_feats.detach().float().cpu()
    scores = dissimilarity_scores(photos, renders, photo_feats, render_feats, pl)
    coseg, dynamic = cosegment(photo_feats, scores, pl.kmeans_k, pl.kmeans_iters, pl.top_cluster_fraction,
                               pl.score_threshold, pl.min_frame_votes, seed)
    high = (scores > pl.score_threshold).numpy().astype(np.uint8)
    coseg_np = coseg.numpy().astype(np.uint8)
    images = (rearrange(photos, "t c h w -> t h w c").clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
    masks = []
    for t in range(photos.shape[0]):
        m = morphology(grow_into_clusters(coseg_np[t, 0], high[t, 0]), int(pl.morph_kernel))
        if pl.grabcut:
            m = grabcut_refine(images[t], m, band=max(int(pl.morph_kernel), 1), iters=int(pl.grabcut_iters))
        masks.append(torch.from_numpy(m))
    render_psnr = psnr(renders, photos)
    return PseudoMasks(masks=torch.stack(masks)[:, None].float(), scores=scores,
                       reliable=render_psnr >= cfg.training.psnr_filter_threshold, psnr=render_psnr,
                       dynamic_clusters=dynamic, cosegment=coseg)


@torch.no_grad()
def pseudo_masks_for_batch(renders: Tensor, targets: Tensor, backbone, cfg, seed: int = 0,
                           target_feats: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """In-loop pseudo-labels. renders, targets: (B, T, 3, H, W) in [0, 1] (renders from the frozen static model);
    ``backbone`` a frozen :class:`~wildrayzer.semantic.SemanticBackbone`; ``target_feats`` (B, T, C, h, w): the
    targets' features when the caller already has them (saves a backbone pass) -> masks (B, T, 1, H, W) float32 in
    {0, 1}, reliable (B, T) bool, on the inputs' device. Each batch item is one scene for the co-segmentation.
    The renders go through the backbone only when the score reads their features (:func:`needs_render_features`)."""
    b, t = targets.shape[:2]
    if renders.shape != targets.shape:
        raise ValueError(f"renders {tuple(renders.shape)} and targets {tuple(targets.shape)} must match")

    def features(x: Tensor) -> Tensor:  # (B, T, 3, H, W) -> (B, T, C, h, w)
        return rearrange(backbone(rearrange(x.float(), "b t c h w -> (b t) c h w")), "(b t) c h w -> b t c h w", b=b)

    with_renders = needs_render_features(cfg.pseudolabel)
    if target_feats is None and with_renders:  # one backbone call for both
        both = features(torch.cat([targets, renders.clamp(0, 1)], dim=1))
        target_feats, render_feats = both[:, :t], both[:, t:]
    else:
        target_feats = features(targets) if target_feats is None else target_feats
        render_feats = features(renders.clamp(0, 1)) if with_renders else None
    target_feats = target_feats.float().cpu()
    render_feats = None if render_feats is None else render_feats.float().cpu()
    targets_cpu, renders_cpu = targets.float().cpu(), renders.float().cpu()

    def one(i: int) -> PseudoMasks:
        return build_pseudo_masks(targets_cpu[i], renders_cpu[i], target_feats[i],
                                  None if render_feats is None else render_feats[i], cfg, seed=seed)

    workers = min(b, int(cfg.pseudolabel.workers) or os.cpu_count() or 1)
    if workers > 1:  # each scene is independent and seeded: the result does not depend on the thread count
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outs = list(pool.map(one, range(b)))
    else:
        outs = [one(i) for i in range(b)]
    masks = torch.stack([o.masks for o in outs])
    reliable = torch.stack([o.reliable for o in outs])
    return masks.to(targets.device), reliable.to(targets.device)

