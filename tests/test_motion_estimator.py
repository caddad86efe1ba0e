"""MotionEstimator: shapes, fusions, gradients, no-semantic mode, initial prior, and that it can fit a mask."""

import pytest
import torch
import torch.nn.functional as F

from wildrayzer.config import load_config
from wildrayzer.model.motion import INITIAL_MOTION_PROB, MotionEstimator, tap_layers

pytestmark = pytest.mark.usefixtures("one_thread")

def _model_cfg(fusion="sum", layers=2, ctx=2, dim=32, size=32, patch=8):
    return load_config(None, [f"model.dim={dim}", "model.heads=2", f"model.motion_layers={layers}",
                              f"model.patch_size={patch}", f"model.image_size={size}", f"model.motion_fusion={fusion}",
                              f"model.num_context_views={ctx}", "model.num_target_views=1"]).model


def _inputs(b, v, c, size=32, patch=8, dim=32, h=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = (size // patch) ** 2
    sem = None if c == 0 else F.normalize(torch.randn(b, v, c, h, h, generator=g), dim=2)
    return sem, torch.randn(b, v, n, dim, generator=g), torch.randn(b, v, n, dim, generator=g)


def test_tap_layers():
    assert tap_layers(4) == [0, 1, 2, 3]
    assert tap_layers(12) == [2, 5, 8, 11]
    assert tap_layers(2) == [0, 0, 0, 1]
    assert tap_layers(1) == [0, 0, 0, 0]


@pytest.mark.parametrize("fusion", ["sum", "concat"])
@pytest.mark.parametrize("views", [1, 3])
@pytest.mark.parametrize("semantic_dim", [0, 12])
def test_shapes_and_finite(fusion, views, semantic_dim):
    torch.manual_seed(0)
    est = MotionEstimator(_model_cfg(fusion, ctx=views), semantic_dim)
    sem, img, plk = _inputs(2, views, semantic_dim)
    out = est(sem, img, plk, 32, 32)
    assert out.shape == (2, views, 1, 32, 32)
    assert torch.isfinite(out).all()


def test_non_square_and_patch16():
    est = MotionEstimator(_model_cfg(layers=4, size=64, patch=16), 7)
    g = torch.Generator().manual_seed(1)
    sem = torch.randn(1, 2, 7, 3, 5, generator=g)
    img, plk = torch.randn(2, 1, 2, 2 * 4, 32, generator=g)  # 32x64 image, 2x4 token grid
    assert est(sem, img, plk, 32, 64).shape == (1, 2, 1, 32, 64)


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_gradients_reach_every_parameter(fusion):
    torch.manual_seed(0)
    est = MotionEstimator(_model_cfg(fusion, layers=4, ctx=2), 12)
    sem, img, plk = _inputs(2, 3, 12)  # all 3 view-embedding rows used (2 context + 1 target)
    img.requires_grad_(True)
    out = est(sem, img, plk, 32, 32)
    target = (torch.rand(out.shape, generator=torch.Generator().manual_seed(3)) > 0.8).float()
    F.binary_cross_entropy_with_logits(out, target).backward()
    for name, p in est.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert img.grad.abs().sum() > 0


def test_each_modality_and_each_view_matters():
    torch.manual_seed(0)
    est = MotionEstimator(_model_cfg(), 12).eval()
    sem, img, plk = _inputs(1, 2, 12)
    base = est(sem, img, plk, 32, 32)
    for changed in [(sem * -1, img, plk), (sem, img * 0.5, plk), (sem, img, plk + 1)]:
        assert (est(*changed, 32, 32) - base).abs().max() > 1e-4
    # Views attend to each other: changing view 1's tokens changes view 0's logits.
    img2 = img.clone()
    img2[:, 1] += 1.0
    assert (est(sem, img2, plk, 32, 32)[:, 0] - base[:, 0]).abs().max() > 1e-5


def test_untrained_estimator_predicts_static():
    torch.manual_seed(0)
    est = MotionEstimator(_model_cfg(), 12)
    probs = torch.sigmoid(est(*_inputs(2, 2, 12), 32, 32))
    assert abs(probs.mean().item() - INITIAL_MOTION_PROB) < 0.01
    assert probs.max() < 0.1  # below model.mask_token_threshold: no token is masked by an untrained estimator


def test_bad_inputs_raise():
    est = MotionEstimator(_model_cfg(), 12)
    sem, img, plk = _inputs(1, 2, 12)
    with pytest.raises(ValueError, match="semantic_feats"):
        est(None, img, plk, 32, 32)
    with pytest.raises(ValueError, match="patch"):
        est(sem, img, plk, 40, 32)
    with pytest.raises(ValueError, match="at most 3 views"):
        est(*_inputs(1, 4, 12), 32, 32)


def test_activation_checkpointing_matches():
    torch.manual_seed(0)
    est = MotionEstimator(_model_cfg(layers=2), 12).train()
    sem, img, plk = _inputs(1, 2, 12)
    ref = est(sem, img, plk, 32, 32)
    est.activation_checkpointing = True
    torch.testing.assert_close(est(sem, img, plk, 32, 32), ref)


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_overfits_a_fixed_mask(fusion):
    """A few dozen Adam steps on one synthetic mask: BCE falls by more than 4x and the mask IoU is high."""
    torch.manual_seed(0)
    est = MotionEstimator(_model_cfg(fusion, layers=2), 12)
    sem, img, plk = _inputs(1, 2, 12)
    target = torch.zeros(1, 2, 1, 32, 32)
    target[0, 0, :, 4:20, 6:18] = 1.0  # a rectangle in view 0
    target[0, 1, :, 14:30, 10:28] = 1.0  # another in view 1
    opt = torch.optim.Adam(est.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss = F.binary_cross_entropy_with_logits(est(sem, img, plk, 32, 32), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 4, (losses[0], losses[-1])
    pred = est(sem, img, plk, 32, 32) > 0
    iou = (pred & (target > 0)).sum() / (pred | (target > 0)).sum()
    assert iou > 0.8, iou
