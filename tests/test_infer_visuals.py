import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from wildrayzer.infer.visuals import colorize, error_map, mask_overlay, save_png, to_uint8


def test_save_png_roundtrip_tensor_and_array(tmp_path):
    img = torch.rand(3, 12, 17)
    path = save_png(tmp_path / "a" / "img.png", img)
    back = np.asarray(Image.open(path))
    assert back.shape == (12, 17, 3) and back.dtype == np.uint8
    np.testing.assert_allclose(back / 255.0, img.permute(1, 2, 0).numpy(), atol=0.5 / 255 + 1e-6)
    grey = save_png(tmp_path / "g.png", np.full((5, 6), 0.5))
    assert np.asarray(Image.open(grey)).shape == (5, 6)
    assert to_uint8(torch.full((1, 4, 4), 2.0)).max() == 255
    with pytest.raises(ValueError):
        to_uint8(torch.rand(5, 4, 4))


def test_mask_overlay_tints_only_moving_pixels():
    img = torch.full((3, 8, 8), 0.4)
    mask = torch.zeros(1, 8, 8)
    mask[:, :4] = 1.0
    out = mask_overlay(img, mask, alpha=0.5)
    torch.testing.assert_close(out[:, 4:], img[:, 4:])
    torch.testing.assert_close(out[:, :4], torch.tensor([0.7, 0.2, 0.2]).view(3, 1, 1).expand(3, 4, 8))
    with pytest.raises(ValueError):
        mask_overlay(img, torch.zeros(1, 4, 4))


def test_error_map_fixed_scale():
    gt = torch.rand(3, 10, 10)
    zero = error_map(gt, gt)
    cmap0 = torch.tensor(matplotlib.colormaps["inferno"](0.0)[:3], dtype=torch.float32).view(3, 1, 1)
    torch.testing.assert_close(zero, cmap0.expand(3, 10, 10))
    flat = torch.full((3, 10, 10), 0.25)
    pred = flat.clone()
    pred[:, 0, 0] = 0.75  # |error| 0.5 = ERROR_VMAX -> top colour; elsewhere 0 -> bottom colour
    top = torch.tensor(matplotlib.colormaps["inferno"](1.0)[:3], dtype=torch.float32)
    emap = error_map(pred, flat)
    torch.testing.assert_close(emap[:, 0, 0], top)
    torch.testing.assert_close(emap[:, 5, 5], cmap0[:, 0, 0])
    assert colorize(torch.zeros(4, 4)).shape == (3, 4, 4)
