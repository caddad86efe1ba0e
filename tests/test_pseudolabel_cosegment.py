"""Co-segmentation parts: seeded spherical k-means, the cluster vote, region growing into clusters."""

import numpy as np
import torch
import torch.nn.functional as F

from wildrayzer.pseudolabel.constructor import grow_into_clusters
from wildrayzer.pseudolabel.cosegment import cluster_frame_stats, cosegment, dynamic_clusters, kmeans, pixel_labels


def _blobs(n_per=50, dims=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(3, dims, generator=g), dim=1)
    pts = torch.cat([centres[i] + 0.05 * torch.randn(n_per, dims, generator=g) for i in range(3)])
    return F.normalize(pts, dim=1), torch.arange(3).repeat_interleave(n_per)


def test_kmeans_recovers_separated_clusters_and_is_seeded():
    pts, truth = _blobs()
    c, labels = kmeans(pts, 3, 20, seed=0)
    assert c.shape == (3, 8)
    torch.testing.assert_close(c.norm(dim=1), torch.ones(3))
    for i in range(3):  # each true cluster maps to exactly one label, and labels differ between clusters
        assert labels[truth == i].unique().numel() == 1
    assert labels.unique().numel() == 3
    c2, labels2 = kmeans(pts, 3, 20, seed=0)
    assert torch.equal(labels, labels2) and torch.equal(c, c2)


def test_kmeans_clamps_k_to_points():
    pts, _ = _blobs(n_per=2)
    c, labels = kmeans(pts, 64, 5)
    assert c.shape[0] == 6 and labels.max() < 6


def test_pixel_labels_follow_features():
    feats = torch.zeros(1, 2, 4, 4)
    feats[0, 0, :, :2] = 1.0  # left half: direction 0
    feats[0, 1, :, 2:] = 1.0  # right half: direction 1
    labels = pixel_labels(feats, torch.eye(2), 16, 16)
    assert labels.shape == (1, 16, 16)
    assert (labels[0, :, :6] == 0).all() and (labels[0, :, 10:] == 1).all()


def test_cluster_frame_stats():
    labels = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [0, 2]]])
    scores = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    counts, sums = cluster_frame_stats(labels, scores, 3)
    torch.testing.assert_close(counts, torch.tensor([[1.0, 3, 0], [1, 0, 3]]))
    torch.testing.assert_close(sums, torch.tensor([[1.0, 9, 0], [7, 0, 19]], dtype=sums.dtype))


def _stats(frame_means: list[list[float]], count: float = 10.0):
    """frame_means: per frame, per cluster mean score (nan = absent) -> counts, sums (T, K)."""
    m = torch.tensor(frame_means)
    counts = torch.where(torch.isnan(m), 0.0, count)
    return counts, torch.nan_to_num(m) * counts


def test_vote_needs_enough_frames_and_a_top_rank():
    nan = float("nan")
    # 6 frames, 4 clusters. c0 high in 5 frames; c1 very high but only in 2 frames; c2 low; c3 absent.
    frames = [[3.0, 9.0, 0.0, nan]] * 2 + [[3.0, 0.0, 0.0, nan]] * 3 + [[0.0, 0.0, 0.0, nan]]
    counts, sums = _stats(frames)
    dyn, flagged = dynamic_clusters(counts, sums, top_fraction=0.5, score_threshold=1.0, min_votes=4)
    assert flagged[:, 0].sum() == 5 and flagged[:, 1].sum() == 2
    assert dyn.tolist() == [True, False, False, False]
    # Only the single best cluster may be dynamic when the top fraction is small: c1 ranks first but lacks votes.
    dyn, _ = dynamic_clusters(counts, sums, top_fraction=0.05, score_threshold=1.0, min_votes=4)
    assert not dyn.any()
    # Votes are clamped to the number of frames: with 2 frames, flagged in both suffices.
    counts2, sums2 = _stats(frames[:2])
    dyn, _ = dynamic_clusters(counts2, sums2, top_fraction=0.5, score_threshold=1.0, min_votes=4)
    assert dyn.tolist() == [True, True, False, False]


def test_cosegment_marks_a_recurring_dynamic_object():
    """Object features recur in every frame with high scores; a static region shares nothing with it."""
    t, size = 5, 16
    feats = torch.zeros(t, 3, 8, 8)
    feats[:, 0] = 1.0  # background
    scores = torch.zeros(t, 1, size, size)
    gt = torch.zeros(t, 1, size, size, dtype=torch.bool)
    for i in range(t):
        feats[i, :, 2:5, i:i + 3] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # the object moves right
        gt[i, 0, 4:10, 2 * i:2 * i + 6] = True
        scores[i, 0][gt[i, 0]] = 3.0
        scores[i, 0, 4:10, 2 * i:2 * i + 2] = 0.0  # its left part matches the render: the score misses it
    mask, dyn = cosegment(feats, scores, k=4, iters=10, top_fraction=0.05, score_threshold=1.0, min_votes=4)
    assert dyn.numel() == 1
    inter = (mask & gt).sum().item()
    assert inter / gt.sum().item() > 0.9  # the cluster recovers the low-score part too
    assert (mask & ~gt).sum().item() / gt.sum().item() < 0.3


def test_grow_into_clusters_keeps_only_supported_regions():
    clusters = np.zeros((20, 20), np.uint8)
    clusters[2:8, 2:8] = 1  # region touched by a seed
    clusters[12:18, 12:18] = 1  # same cluster elsewhere, no support
    seeds = np.zeros_like(clusters)
    seeds[3, 3] = 1
    seeds[0, 19] = 1  # a seed outside any cluster region is kept as is
    out = grow_into_clusters(clusters, seeds)
    assert out[2:8, 2:8].all() and out[0, 19] == 1
    assert out[12:18, 12:18].sum() == 0
    assert out.sum() == 37
