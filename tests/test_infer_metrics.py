import json
import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from wildrayzer.geometry import make_pose, rotation_6d_to_matrix
from wildrayzer.infer.metrics import (
    MetricsAggregator,
    format_metrics_table,
    mask_iou_pooled,
    mask_scores,
    pose_metrics,
    psnr_full,
    psnr_static,
    scene_metrics,
    ssim_full,
    ssim_static,
)


def _pair(n=2, h=40, w=48, noise=0.08, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, h, w, generator=g, dtype=torch.float64)
    base = torch.nn.functional.avg_pool2d(base, 5, stride=1, padding=2)  # some structure, not white noise
    noisy = (base + noise * torch.randn(base.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return noisy, base


def _skimage_ssim(a, b, full=False):
    return structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=True, data_range=1.0, channel_axis=-1, full=full)


def test_ssim_matches_skimage():
    pred, gt = _pair()
    ours = ssim_full(pred, gt)
    ref = [_skimage_ssim(pred[i], gt[i]) for i in range(pred.shape[0])]
    assert ours.shape == (2,)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)
    assert float(ssim_full(gt, gt)[0]) == pytest.approx(1.0, abs=1e-6)


def test_ssim_static_matches_masked_skimage_map():
    pred, gt = _pair(n=1)
    mask = torch.zeros(1, 1, 40, 48)
    mask[..., 10:30, 5:25] = 1.0
    ours = float(ssim_static(pred, gt, mask)[0])
    _, smap = _skimage_ssim(pred[0], gt[0], full=True)  # (H, W, C) full-size map; skimage averages its interior
    interior = smap.mean(-1)[5:-5, 5:-5]
    static = (mask[0, 0].numpy() < 0.5)[5:-5, 5:-5]
    assert ours == pytest.approx(float(interior[static].mean()), abs=1e-6)
    assert ours != pytest.approx(float(interior.mean()), abs=1e-4)  # the mask really changes the value
    # An empty motion mask gives exactly the full-image SSIM.
    empty = torch.zeros_like(mask)
    assert float(ssim_static(pred, gt, empty)[0]) == pytest.approx(float(ssim_full(pred, gt)[0]), abs=1e-7)


def test_psnr_static_ignores_moving_pixels():
    gt = torch.full((1, 3, 16, 16), 0.5)
    pred = gt + 0.1  # static error 0.1 -> MSE 0.01 -> 20 dB
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1.0
    pred[..., :8, :] = 1.0  # a large error, but only where things move
    assert float(psnr_static(pred, gt, mask)[0]) == pytest.approx(20.0, abs=1e-4)
    assert float(psnr_full(pred, gt)[0]) < 10.0
    assert math.isnan(float(psnr_static(pred, gt, torch.ones_like(mask))[0]))
    assert math.isnan(float(ssim_static(pred, gt, torch.ones_like(mask))[0]))


def test_mask_scores_counts_and_empty_masks():
    gt = torch.zeros(4, 1, 4, 4)
    pred = torch.zeros(4, 1, 4, 4)
    gt[0, 0, :2, :] = 1  # 8 moving pixels
    pred[0, 0, :1, :] = 0.9  # 4 predicted, all correct
    pred[0, 0, 3, :2] = 0.7  # 2 false positives
    # view 1: both empty; view 2: prediction on empty GT; view 3: GT moving, nothing predicted
    pred[2, 0, 0, 0] = 1
    gt[3, 0, 0, 0] = 1
    s = mask_scores(pred, gt)
    assert s["mask_iou"][0] == pytest.approx(4 / 10)
    assert s["mask_precision"][0] == pytest.approx(4 / 6)
    assert s["mask_recall"][0] == pytest.approx(4 / 8)
    assert (s["mask_iou"][1], s["mask_precision"][1], s["mask_recall"][1]) == (1.0, None, None)
    assert (s["mask_iou"][2], s["mask_precision"][2], s["mask_recall"][2]) == (0.0, 0.0, None)
    assert (s["mask_iou"][3], s["mask_precision"][3], s["mask_recall"][3]) == (0.0, None, 0.0)
    # pooled over the 4 views: intersections 4, unions 10 + 0 + 1 + 1; the both-empty view adds nothing
    assert mask_iou_pooled(pred, gt) == pytest.approx(4 / 12)
    assert mask_iou_pooled(pred[1:2], gt[1:2]) is None
    pred_soft = pred.clone()
    pred_soft[0, 0, 3, :2] = 0.49  # below threshold -> no longer false positives
    assert mask_scores(pred_soft, gt)["mask_precision"][0] == pytest.approx(1.0)


def _cams(v=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    rot = rotation_6d_to_matrix(torch.randn(v, 6, generator=g, dtype=torch.float64))
    return make_pose(rot, torch.randn(v, 3, generator=g, dtype=torch.float64))


def test_pose_metrics_invariant_to_similarity_and_detects_errors():
    gt = _cams()
    sim = make_pose(rotation_6d_to_matrix(torch.tensor([0.3, 1.0, -0.2, -0.5, 0.1, 0.9], dtype=torch.float64)),
                    torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))
    pred = sim @ gt
    pred[:, :3, 3] *= 3.0  # global scale of the world
    err = pose_metrics(pred, gt)
    assert err["pose_rot_deg"] < 1e-4 and err["pose_trans_rel"] < 1e-6
    bad = pred.clone()
    bad[2, :3, 3] += torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    bad[3, :3, :3] = bad[3, :3, :3] @ rotation_6d_to_matrix(
        torch.tensor([1.0, 0.2, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    err_bad = pose_metrics(bad, gt)
    assert err_bad["pose_rot_deg"] > 1.0 and err_bad["pose_trans_rel"] > 0.01
    with pytest.raises(ValueError):
        pose_metrics(gt[:1], gt[:1])


def test_scene_metrics_keys_and_values():
    pred, gt = _pair(n=3)
    plain = scene_metrics(pred.float(), gt.float())
    assert set(plain) == {"psnr", "ssim", "lpips"} and plain["lpips"] is None
    assert plain["psnr"] == pytest.approx(float(psnr_full(pred, gt).mean()), abs=1e-3)
    masks = torch.zeros(3, 1, 40, 48)
    masks[0] = 1.0  # first target fully moving: static metrics average over the other two
    gt_c2w = _cams(v=5)
    full = scene_metrics(pred.float(), gt.float(), target_motion_masks=masks, clean_targets=gt.float(),
                         pred_input_masks=torch.ones(2, 1, 40, 48), gt_input_masks=torch.ones(2, 1, 40, 48),
                         pred_c2w=gt_c2w, gt_c2w=gt_c2w)
    assert full["psnr_static"] == pytest.approx(float(psnr_full(pred[1:], gt[1:]).mean()), abs=1e-3)
    assert full["ssim_static"] == pytest.approx(float(ssim_full(pred[1:], gt[1:]).mean()), abs=1e-5)
    assert full["lpips_static"] is None and full["psnr_clean"] == pytest.approx(plain["psnr"], abs=1e-4)
    assert full["mask_iou"] == 1.0 and full["mask_recall"] == 1.0 and full["mask_iou_pooled"] == 1.0
    assert full["pose_rot_deg"] < 1e-4
    with pytest.raises(ValueError):
        scene_metrics(pred.float(), gt.float(), pred_input_masks=torch.ones(2, 1, 40, 48))


def test_aggregator_none_aware_means_and_table():
    agg = MetricsAggregator()
    agg.add("a", {"psnr": 20.0, "ssim": 0.5, "lpips": None, "mask_recall": None})
    agg.add("b", {"psnr": 22.0, "ssim": float("nan"), "lpips": None, "mask_recall": 0.8})
    agg.update({"c": {"psnr": 24.0, "lpips": None}})
    means = agg.means()
    assert means == {"psnr": pytest.approx(22.0), "ssim": pytest.approx(0.5), "lpips": None,
                     "mask_recall": pytest.approx(0.8)}
    assert agg.counts() == {"psnr": 3, "ssim": 1, "lpips": 0, "mask_recall": 1}
    summary = json.loads(json.dumps(agg.summary()))
    assert summary["mean"]["lpips"] is None and summary["num_scenes"] == 3 and summary["scenes"]["b"]["ssim"] is None
    table = format_metrics_table(means, agg.counts())
    lpips_row = next(line for line in table.splitlines() if "LPIPS" in line)
    assert "n/a" in lpips_row and "lower" in lpips_row and "22.00" in table
    assert table.isascii()  # printable on any console encoding
    with pytest.raises(ValueError):
        agg.add("a", {"psnr": 1.0})
    with pytest.raises(TypeError):
        agg.add("d", {"psnr": "high"})
