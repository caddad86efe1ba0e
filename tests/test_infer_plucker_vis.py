import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from wildrayzer.geometry import make_pose, plucker_rays, ray_origins_directions, rotation_6d_to_matrix
from wildrayzer.infer.plucker_vis import (
    klein_residual,
    plucker_stats,
    save_camera_plucker_vis,
    save_plucker_vis,
)

H, W = 40, 56


def _camera():
    rot = rotation_6d_to_matrix(torch.tensor([0.9, 0.2, -0.1, -0.1, 1.0, 0.3], dtype=torch.float64))
    c2w = make_pose(rot, torch.tensor([1.5, -0.7, 2.0], dtype=torch.float64))
    return c2w, torch.tensor([50.0, 50.0, W / 2, H / 2], dtype=torch.float64)


def _png(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_klein_residual_zero_for_geometry_rays_and_not_for_broken_maps():
    c2w, k = _camera()
    p = plucker_rays(c2w, k, H, W)
    stats = plucker_stats(p)
    assert stats["klein_residual_max"] < 1e-12 and stats["direction_norm_error_max"] < 1e-12
    assert stats["moment_max"] > 1.0
    o, d = ray_origins_directions(c2w, k, H, W)
    broken = torch.cat([o, d], dim=-1)  # moment replaced by the origin: not a line
    assert float(klein_residual(broken).max()) > 0.1


def test_save_plucker_vis_files_sizes_and_content(tmp_path):
    c2w, k = _camera()
    paths = save_camera_plucker_vis(tmp_path, c2w, k, H, W, stem="target_00")
    assert set(paths) == {"direction", "moment", "residual"}
    for path in paths.values():
        assert path.is_file() and path.parent == tmp_path
        assert Image.open(path).size == (W, H)
    _, d = ray_origins_directions(c2w, k, H, W)
    np.testing.assert_allclose(_png(paths["direction"]) / 255.0, ((d + 1) / 2).numpy(), atol=1 / 255 + 1e-6)
    black = (np.array(matplotlib.colormaps["inferno"](0.0)[:3]) * 255).round()
    assert np.abs(_png(paths["residual"]).astype(float) - black).max() <= 1  # valid rays: residual map all 0
    moment = _png(paths["moment"])
    assert moment.reshape(-1, 3).std(0).max() > 5  # |o x d| varies over the image
    o, d = ray_origins_directions(c2w, k, H, W)
    bad = save_plucker_vis(tmp_path / "bad", torch.cat([o, d], dim=-1), stem="t")
    assert np.abs(_png(bad["residual"]).astype(float) - black).max() > 50


@pytest.mark.parametrize("stride", [8, 16])
def test_quiver_written_only_when_asked(tmp_path, stride):
    c2w, k = _camera()
    p = plucker_rays(c2w, k, H, W)
    without = save_plucker_vis(tmp_path / "a", p, stem="v", stride=stride)
    assert "quiver" not in without and not (tmp_path / "a" / "v_plucker_quiver.png").exists()
    with_q = save_plucker_vis(tmp_path / "b", p, stem="v", stride=stride, include_quiver=True)
    img = _png(with_q["quiver"])
    assert with_q["quiver"].name == "v_plucker_quiver.png"
    assert img.shape[0] > 100 and img.shape[1] > 100 and img.reshape(-1, 3).std(0).max() > 10
    with pytest.raises(ValueError):
        save_plucker_vis(tmp_path / "c", p, stem="v", stride=0, include_quiver=True)
    with pytest.raises(ValueError):
        save_plucker_vis(tmp_path / "c", p[..., :5], stem="v")
