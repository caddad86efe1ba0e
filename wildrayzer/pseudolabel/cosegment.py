"""Co-segmentation for pseudo-motion masks: seeded k-means on a scene's semantic features and the cluster vote.

All functions are pure torch. Features are unit vectors, so k-means runs on the cosine (spherical k-means: the
nearest centroid is the one with the largest dot product, centroids are re-normalised means).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def kmeans(points: Tensor, k: int, iters: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Spherical k-means with k-means++ seeding from a private generator (deterministic for a given seed).

    points: (P, C) unit vectors -> centroids (K, C) unit vectors with K = min(k, P), labels (P,) int64.
    """
    p = points.shape[0]
    if p == 0:
        raise ValueError("kmeans: no points")
    k = max(1, min(int(k), p))
    x = F.normalize(points.float(), dim=1, eps=1e-6)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    first = int(torch.randint(p, (1,), generator=gen))
    centroids = [x[first]]
    dist = (1.0 - x @ x[first]).clamp_min(0)  # (P,) cosine distance to the nearest chosen centroid
    for _ in range(1, k):
        total = dist.sum()
        if total <= 0:  # fewer distinct points than k: duplicates are harmless, they end up empty
            idx = int(torch.randint(p, (1,), generator=gen))
        else:
            idx = int(torch.multinomial((dist / total).cpu(), 1, generator=gen))
        centroids.append(x[idx])
        dist = torch.minimum(dist, (1.0 - x @ x[idx]).clamp_min(0))
    c = torch.stack(centroids)
    labels = (x @ c.T).argmax(1)
    for _ in range(int(iters)):
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        c = torch.where(counts[:, None] > 0, F.normalize(sums, dim=1, eps=1e-6), c)  # empty clusters keep their seed
        new = (x @ c.T).argmax(1)
        if torch.equal(new, labels):
            break
        labels = new
    return c, labels


def pixel_labels(feats: Tensor, centroids: Tensor, height: int, width: int) -> Tensor:
    """Assign every pixel to a cluster: cosine similarities on the feature grid, upsampled, arg-max.

    feats: (T, C, h, w) unit vectors, centroids: (K, C) -> labels (T, H, W) int64. Upsampling the K similarity maps
    (rather than the C feature channels) is cheaper and gives smooth boundaries between clusters.
    """
    sim = torch.einsum("tchw,kc->tkhw", feats.float(), centroids)
    sim = F.interpolate(sim, size=(height, width), mode="bilinear", align_corners=False)
    return sim.argmax(1)


def cluster_frame_stats(labels: Tensor, scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """labels: (T, H, W) in [0, k), scores: (T, H, W) -> per (frame, cluster) pixel count and score sum, (T, K) each."""
    t = labels.shape[0]
    flat = rearrange(labels + torch.arange(t, device=labels.device)[:, None, None] * k, "t h w -> (t h w)")
    counts = torch.bincount(flat, minlength=t * k).view(t, k).float()
    sums = torch.bincount(flat, weights=rearrange(scores.float(), "t h w -> (t h w)"), minlength=t * k).view(t, k)
    return counts, sums


def dynamic_clusters(counts: Tensor, sums: Tensor, top_fraction: float, score_threshold: float,
                     min_votes: int) -> tuple[Tensor, Tensor]:
    """The co-segmentation vote.

    counts, sums: (T, K) per-frame pixel counts and score sums. A cluster is *flagged* in a frame when it is present
    there and its mean score in that frame exceeds ``score_threshold``. It is *dynamic* when its mean score over
    the whole scene ranks in the top ``top_fraction`` of the non-empty clusters (at least one cluster) and it is
    flagged in at least ``min(min_votes, T)`` frames.
    -> dynamic (K,) bool, flagged (T, K) bool.
    """
    t = counts.shape[0]
    frame_mean = sums / counts.clamp_min(1)
    flagged = (counts > 0) & (frame_mean > score_threshold)
    total = counts.sum(0)
    present = total > 0
    scene_mean = torch.where(present, sums.sum(0) / total.clamp_min(1), torch.full_like(total, -math.inf))
    n_top = max(1, math.ceil(top_fraction * int(present.sum())))
    top = torch.zeros_like(present)
    top[scene_mean.topk(n_top).indices] = True
    votes = flagged.sum(0)
    need = max(1, min(int(min_votes), t))
    return top & present & (votes >= need), flagged


def cosegment(photo_feats: Tensor, scores: Tensor, k: int, iters: int, top_fraction: float,
              score_threshold: float, min_votes: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Pixels of dynamic clusters, in the frames where the cluster is flagged.

    photo_feats: (T, C, h, w) unit vectors of the scene's photos; scores: (T, 1, H, W) combined dissimilarity
    -> mask (T, 1, H, W) bool, dynamic cluster ids (D,) int64.
    """
    t, _, h, w = photo_feats.shape
    height, width = scores.shape[-2:]
    centroids, _ = kmeans(rearrange(photo_feats, "t c h w -> (t h w) c"), k, iters, seed)
    labels = pixel_labels(photo_feats, centroids, height, width)
    counts, sums = cluster_frame_stats(labels, scores[:, 0], centroids.shape[0])
    dynamic, flagged = dynamic_clusters(counts, sums, top_fraction, score_threshold, min_votes)
    keep = dynamic[None] & flagged  # (T, K): cluster k is taken in frame t
    mask = torch.gather(keep, 1, rearrange(labels, "t h w -> t (h w)"))
    return rearrange(mask, "t (h w) -> t 1 h w", h=height), dynamic.nonzero()[:, 0]
