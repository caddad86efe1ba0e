"""Losses: masked MSE, BCE with per-sample validity, VGG-19 perceptual loading (torchvision key format)."""

import pytest
import torch

from wildrayzer.errors import CheckpointError
from wildrayzer.train.losses import mask_bce_loss, mse_loss, rendering_loss
from wildrayzer.train.perceptual import PerceptualLoss, vgg19_features
from wildrayzer.train.stage1 import build_perceptual


def test_masked_mse_ignores_excluded_pixels():
    pred, target = torch.zeros(1, 2, 3, 8, 8), torch.zeros(1, 2, 3, 8, 8)
    target[:, :, :, :4] = 1.0  # error only in the top half
    weight = torch.ones(1, 2, 1, 8, 8)
    weight[:, :, :, :4] = 0.0
    assert mse_loss(pred, target) == pytest.approx(0.5)
    assert mse_loss(pred, target, weight) == 0.0
    weight[:, :, :, 0] = 1.0  # count row 0 too: 1 erroneous row out of 5 counted
    assert mse_loss(pred, target, weight) == pytest.approx(1 / 5)


def test_mask_bce_counts_only_valid_samples():
    logits = torch.zeros(2, 2, 1, 4, 4, requires_grad=True)
    target = torch.zeros(2, 2, 1, 4, 4)
    target[1] = 1.0
    valid = torch.tensor([[True, True], [False, False]])
    loss, logs = mask_bce_loss(logits, target, valid)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert logs["mask_valid_frac"] == 0.5
    none, _ = mask_bce_loss(logits, target, torch.zeros(2, 2, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and logits.grad is not None and logits.grad.abs().sum() == 0


def _torchvision_vgg19_state(seed=0):
    torch.manual_seed(seed)
    feats = vgg19_features(last_index=36)  # the full torchvision `features`
    state = {f"features.{k}": v for k, v in feats.state_dict().items()}
    state.update({"classifier.0.weight": torch.zeros(4, 4), "classifier.0.bias": torch.zeros(4)})
    return state


def test_perceptual_loads_torchvision_format_and_gives_gradients(tmp_path):
    state = _torchvision_vgg19_state()
    assert "features.34.weight" in state and "features.0.weight" in state
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    vgg = PerceptualLoss.from_file(path)
    torch.testing.assert_close(vgg.features[28].weight, state["features.28.weight"])
    assert not any(p.requires_grad for p in vgg.parameters())
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    target = torch.rand(2, 3, 32, 32)
    assert vgg(target, target).item() == 0.0
    loss = vgg(pred, target)
    loss.backward()
    assert loss > 0 and pred.grad.abs().sum() > 0
    masked = vgg(pred, target, torch.zeros(2, 1, 32, 32))
    assert masked.item() == 0.0
    total, logs = rendering_loss(pred[None], target[None], perceptual=vgg, perceptual_weight=0.2)
    assert set(logs) >= {"mse", "psnr", "perceptual", "render_loss"}
    assert total.item() == pytest.approx((logs["mse"] + 0.2 * logs["perceptual"]).item(), rel=1e-5)


def test_perceptual_rejects_foreign_files(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, bad)
    with pytest.raises(CheckpointError, match="not a torchvision VGG-19"):
        PerceptualLoss.from_file(bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        PerceptualLoss.from_file(junk)
    with pytest.raises(CheckpointError, match="no file"):
        PerceptualLoss.from_file(tmp_path / "missing.pth")


def test_perceptual_disabled_without_weights_says_so():
    from wildrayzer.config import load_config

    lines = []
    cfg = load_config(None, ["training.perceptual_weights_path="])
    assert build_perceptual(cfg.training, torch.device("cpu"), lines.append) is None
    assert len(lines) == 1 and "DISABLED" in lines[0]
