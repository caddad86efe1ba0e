"""model.camera_shift_cue: each camera token adds an MLP of how its image correlates with view 0's under whole-pixel
shifts (wildrayzer/model/shift_cue.py, not in the release; benchmarks/RESULTS.md v2.1)."""

import pytest
import torch
import torch.nn.functional as F
from tiny_run import TINY_MODEL

from wildrayzer.config import load_config
from wildrayzer.model import WildRayZerModel
from wildrayzer.model.camera import CameraEstimator
from wildrayzer.model.shift_cue import MAX_SHIFT, PROFILE, shift_profiles
from wildrayzer.train.losses import mse_loss
from wildrayzer.train.stages import apply_trainable


def _texture(size: int, seed: int = 0) -> torch.Tensor:
    """(3, size, size) smooth random texture in [0, 1] (a blurred noise: one clear correlation peak)."""
    g = torch.Generator().manual_seed(seed)
    x = F.avg_pool2d(torch.rand(1, 3, size + 8, size + 8, generator=g), 5, stride=1, padding=2)[0]
    return (x - x.min()) / (x.max() - x.min())


def _pair(size: int, dx: int, dy: int) -> torch.Tensor:
    """(1, 2, 3, size, size): view 0 and a crop of the same texture moved so that
    view1[y, x] = view0[y + dy, x + dx]."""
    big = _texture(size + 2 * 24)
    o = 24
    v0 = big[:, o:o + size, o:o + size]
    v1 = big[:, o + dy:o + dy + size, o + dx:o + dx + size]
    return torch.stack([v0, v1])[None]


@pytest.mark.parametrize(("size", "dx", "dy"), [(64, 5, 0), (64, -9, 0), (64, 0, -3), (128, 10, 0), (128, 0, 14)])
def test_shift_profiles_peak_at_the_shift_between_the_views(size, dx, dy):
    """The column profile of view 1 peaks at its horizontal shift against view 0 (a turn), the row profile at its
    vertical one (each is measured at no shift along the other axis: pure shifts here), in pixels of the 64-pixel
    cue image (a 128-pixel pair shifted by 10 peaks at 5); view 0's profiles at 0, where it correlates 1 with
    itself."""
    prof = shift_profiles(_pair(size, dx, dy))
    assert prof.shape == (1, 2, PROFILE)
    cols, rows = prof[0, :, :PROFILE // 2], prof[0, :, PROFILE // 2:]
    assert cols[0].argmax() - MAX_SHIFT == 0 and rows[0].argmax() - MAX_SHIFT == 0
    moved, shift = (cols[1], dx) if dx else (rows[1], dy)  # the other axis's profile is measured off the shift
    assert moved.argmax() - MAX_SHIFT == round(shift * 64 / size) and moved.max() > 0.9
    assert cols[0, MAX_SHIFT] == pytest.approx(1.0, abs=1e-5)


def _heads(cam: CameraEstimator) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        cam.pose_head[-1].weight.normal_(0, 0.3)


def test_fresh_shift_cue_changes_nothing_and_a_trained_one_reads_each_views_shift():
    """Fresh (zero output), an estimator with the cue predicts exactly what one without it does; with its output
    non-zero (no transformer layers), moving view 2's image moves view 2's camera alone; without images it refuses."""
    torch.manual_seed(0)
    plain = CameraEstimator(16, heads=2, depth=1, num_views=3)
    cued = CameraEstimator(16, heads=2, depth=1, num_views=3, shift_cue=True)
    assert {k.split(".")[0] for k in set(cued.state_dict()) - set(plain.state_dict())} == {"shift_cue"}
    cued.load_state_dict(plain.state_dict(), strict=False)
    _heads(plain)
    _heads(cued)
    imgs = torch.cat([_pair(32, 3, 0), _pair(32, -4, 2)[:, 1:]], dim=1)  # (1, 3, 3, 32, 32)
    tokens = torch.randn(1, 3, 4, 16)
    with torch.no_grad():
        torch.testing.assert_close(cued(tokens, 32, 32, imgs)["c2w"], plain(tokens, 32, 32)["c2w"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="camera_shift_cue"):
        cued(tokens, 32, 32)

    cam = CameraEstimator(16, heads=2, depth=0, num_views=3, shift_cue=True)
    _heads(cam)
    with torch.no_grad():
        cam.shift_cue.mlp[-1].weight.normal_(0, 1.0)
        moved = imgs.clone()
        moved[:, 2] = _pair(32, 6, -1)[0, 1]
        a, b = cam(tokens, 32, 32, imgs)["c2w"][0], cam(tokens, 32, 32, moved)["c2w"][0]
    torch.testing.assert_close(a[:2], b[:2], rtol=0, atol=0)
    assert (a[2] - b[2]).abs().max() > 1e-3


def test_shift_cue_trains_in_stage1():
    """Every parameter of the cue's MLP gets a gradient through the rendering loss once its output has moved; the
    images themselves get none through the cue (it is a fixed measurement)."""
    torch.manual_seed(0)
    model = WildRayZerModel(load_config(None, [*TINY_MODEL, "model.camera_shift_cue=true"]).model)
    apply_trainable(model, 1)
    with torch.no_grad():
        model.camera.pose_head[-1].weight.normal_(0, 0.1)
        model.camera.shift_cue.mlp[-1].weight.normal_(0, 0.1)
    x = torch.rand(2, 8, 3, 32, 32)
    mse_loss(model(x, 2)["renders"], x[:, 2:]).backward()
    for name, p in model.camera.shift_cue.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert not shift_profiles(x.requires_grad_()).requires_grad
