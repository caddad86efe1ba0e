"""MotionEstimator (the release's motion head): shapes, gradients, per-view independence, no-semantic mode, the
initial prior, the decoder's depth per patch size, and that it can fit a mask."""

import pytest
import torch
import torch.nn.functional as F

from wildrayzer.model.motion import INITIAL_MOTION_PROB, MotionEstimator, decoder_steps

pytestmark = pytest.mark.usefixtures("one_thread")


def _est(semantic_dim=12, layers=2, dim=32, patch=8):
    return MotionEstimator(dim, heads=2, depth=layers, patch_size=patch, semantic_dim=semantic_dim)


def _inputs(b, v, c, size=32, patch=8, dim=32, h=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = (size // patch) ** 2
    sem = None if c == 0 else F.normalize(torch.randn(b, v, c, h, h, generator=g), dim=2)
    return sem, torch.randn(b, v, n, dim, generator=g), torch.randn(b, v, n, dim, generator=g)


def test_decoder_steps_follow_the_patch_size():
    assert [decoder_steps(p) for p in (2, 8, 16)] == [1, 3, 4]  # 16 -> the release's 16x16 -> 256x256 decoder
    with pytest.raises(ValueError, match="power-of-two"):
        decoder_steps(12)
    assert len(_est(patch=16, dim=64).decoder.ups) == 4 and len(_est(patch=8).decoder.ups) == 3


@pytest.mark.parametrize("views", [1, 3])
@pytest.mark.parametrize("semantic_dim", [0, 12])
def test_shapes_and_finite(views, semantic_dim):
    torch.manual_seed(0)
    est = _est(semantic_dim)
    sem, img, plk = _inputs(2, views, semantic_dim)
    out = est(sem, img, plk, 32, 32)
    assert out.shape == (2, views, 1, 32, 32)
    assert torch.isfinite(out).all()


def test_non_square_and_patch16():
    est = _est(7, layers=4, dim=64, patch=16)
    g = torch.Generator().manual_seed(1)
    sem = torch.randn(1, 2, 7, 3, 5, generator=g)
    img, plk = torch.randn(2, 1, 2, 2 * 4, 64, generator=g)  # 32x64 image, 2x4 token grid
    assert est(sem, img, plk, 32, 64).shape == (1, 2, 1, 32, 64)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    est = _est(12, layers=4)
    sem, img, plk = _inputs(2, 3, 12)
    img.requires_grad_(True)
    out = est(sem, img, plk, 32, 32)
    target = (torch.rand(out.shape, generator=torch.Generator().manual_seed(3)) > 0.8).float()
    F.binary_cross_entropy_with_logits(out, target).backward()
    for name, p in est.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert img.grad.abs().sum() > 0


def test_each_modality_matters_and_views_are_independent():
    torch.manual_seed(0)
    est = _est(12).eval()
    sem, img, plk = (t.requires_grad_(True) for t in _inputs(1, 2, 12))
    est(sem, img, plk, 32, 32)[:, 0].sum().backward()  # view 0's logits only
    for name, x in (("semantic", sem), ("image", img), ("plucker", plk)):
        assert x.grad[:, 0].abs().sum() > 0, f"view 0's {name} input does not reach its logits"
        # the release's head runs per view: nothing of view 1 reaches view 0
        assert torch.equal(x.grad[:, 1], torch.zeros_like(x.grad[:, 1])), f"view 1's {name} reaches view 0"


def test_untrained_estimator_predicts_static():
    torch.manual_seed(0)
    est = _est(12)
    probs = torch.sigmoid(est(*_inputs(2, 2, 12), 32, 32))
    assert abs(probs.mean().item() - INITIAL_MOTION_PROB) < 0.01
    assert probs.max() < 0.1  # below model.mask_token_threshold: no token is masked by an untrained estimator


def test_bad_inputs_raise():
    est = _est(12)
    sem, img, plk = _inputs(1, 2, 12)
    with pytest.raises(ValueError, match="semantic_feats"):
        est(None, img, plk, 32, 32)
    with pytest.raises(ValueError, match="patch"):
        est(sem, img, plk, 40, 32)
    with pytest.raises(ValueError, match="semantic_dim=0"):
        _est(0)(sem, img, plk, 32, 32)


def test_activation_checkpointing_matches():
    torch.manual_seed(0)
    est = _est(12).train()
    sem, img, plk = _inputs(1, 2, 12)
    ref = est(sem, img, plk, 32, 32)
    est.transformer.activation_checkpointing = True
    torch.testing.assert_close(est(sem, img, plk, 32, 32), ref)


def test_overfits_a_fixed_mask():
    """A few dozen Adam steps on one synthetic mask: BCE falls by more than 4x and the mask IoU is high. (At
    dim 64 / patch 8 the decoder ends with 4 channels; at dim 32 with 2 it learns too slowly to fit here.)"""
    torch.manual_seed(0)
    est = _est(12, dim=64)
    sem, img, plk = _inputs(1, 2, 12, dim=64)
    target = torch.zeros(1, 2, 1, 32, 32)
    target[0, 0, :, 4:20, 6:18] = 1.0  # a rectangle in view 0
    target[0, 1, :, 14:30, 10:28] = 1.0  # another in view 1
    opt = torch.optim.Adam(est.parameters(), lr=5e-3)
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
