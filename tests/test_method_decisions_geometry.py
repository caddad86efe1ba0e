"""Method decisions, geometry and data conventions (docs/METHOD_DECISIONS.md): OpenCV pixel-centre rays, Plücker
[o x d, d], 6D rotations, rigid inverses, poses relative to view 0, posed-mode normalisation, intrinsics under
resize/crop, w2c metadata, the training view window and Sim(3)-aligned pose errors. Each test fails when the
decision it names is flipped (``make mutate``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from wildrayzer.config import load_config
from wildrayzer.data import build_dataset
from wildrayzer.data.frames import adjust_intrinsics, resize_crop
from wildrayzer.geometry import (
    crop_fxfycxcy,
    fxfycxcy_from_normalized_focal,
    invert_pose,
    make_pose,
    matrix_to_rotation_6d,
    normalize_given_c2w,
    pixel_rays_camera,
    plucker_rays,
    relative_c2w,
    rotation_6d_to_matrix,
    scale_fxfycxcy,
)
from wildrayzer.infer.metrics import pose_metrics
from wildrayzer.model import WildRayZerModel


def random_rotation(gen: torch.Generator, n: int = 1) -> torch.Tensor:
    """(n, 3, 3) proper rotations (QR of a Gaussian matrix, det fixed to +1)."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q[torch.det(q) < 0, :, 0] *= -1
    return q


def random_c2w(gen: torch.Generator, n: int) -> torch.Tensor:
    return make_pose(random_rotation(gen, n), torch.randn(n, 3, generator=gen, dtype=torch.float64))


# ------------------------------------------------------------------ rays and Plücker coordinates


def test_rays_go_through_pixel_centres():
    """Pixel (u, v) is sampled at (u + 0.5, v + 0.5): with the principal point at the image centre the rays of
    mirrored pixels are mirrored, and pixel (0, 0) looks along ((0.5 - cx) / fx, (0.5 - cy) / fy, 1)."""
    k = torch.tensor([20.0, 25.0, 8.0, 6.0], dtype=torch.float64)  # 16 x 12 image, centred principal point
    d = pixel_rays_camera(k, 12, 16)
    torch.testing.assert_close(d[:, :, 0], -d[:, :, 0].flip(1))
    torch.testing.assert_close(d[:, :, 1], -d[:, :, 1].flip(0))
    torch.testing.assert_close(d[0, 0], torch.tensor([(0.5 - 8) / 20, (0.5 - 6) / 25, 1.0], dtype=torch.float64))


def test_opencv_axes_y_points_down_and_z_forward():
    """OpenCV camera: image rows grow downwards = +y, the camera looks along +z; in the world through c2w."""
    k = torch.tensor([10.0, 10.0, 4.0, 4.0], dtype=torch.float64)
    d = pixel_rays_camera(k, 8, 8)
    assert (d[0, :, 1] < 0).all() and (d[-1, :, 1] > 0).all()  # top row looks up (-y), bottom row down
    assert (d[:, 0, 0] < 0).all() and (d[:, -1, 0] > 0).all()  # left column -x, right column +x
    assert (d[..., 2] == 1).all()
    # a camera turned 90 degrees about y (its +z looks along world +x) sees its centre ray along world +x
    rot = torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=torch.float64)
    c2w = make_pose(rot, torch.zeros(3, dtype=torch.float64))
    centre = plucker_rays(c2w, torch.tensor([10.0, 10.0, 0.5, 0.5], dtype=torch.float64), 1, 1)[0, 0, 3:]
    torch.testing.assert_close(centre, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_plucker_is_moment_then_unit_direction():
    """Plücker ray = [o x d, d]: moment first (sign: o x d, not d x o), then the unit world direction."""
    gen = torch.Generator().manual_seed(0)
    k = torch.tensor([0.7, 0.9, 0.5, 0.5], dtype=torch.float64)  # pixel (0, 0) looks straight down +z
    o = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    c2w = make_pose(torch.eye(3, dtype=torch.float64), o)
    ray = plucker_rays(c2w, k, 3, 4)
    torch.testing.assert_close(ray[0, 0], torch.tensor([0.0, -1.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    c2w = random_c2w(gen, 1)[0]
    ray = plucker_rays(c2w, torch.tensor([3.0, 2.0, 1.7, 1.1], dtype=torch.float64), 3, 4)
    d, m = ray[..., 3:], ray[..., :3]
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(3, 4, dtype=torch.float64))  # unit directions
    torch.testing.assert_close(m, torch.cross(c2w[:3, 3].expand_as(d), d, dim=-1))
    # a point on the ray, p = o + 2 d, has the same moment p x d: the ray is a line, independent of the origin
    torch.testing.assert_close(torch.cross(c2w[:3, 3] + 2 * d, d, dim=-1), m)


# ------------------------------------------------------------------ rotations and poses


def test_6d_rotation_is_the_first_two_columns():
    """6D = [column 0, column 1]; Gram-Schmidt keeps column 0's direction; round trip on rotations is exact."""
    gen = torch.Generator().manual_seed(1)
    rot = random_rotation(gen, 4)
    r6 = matrix_to_rotation_6d(rot)
    torch.testing.assert_close(r6[:, :3], rot[:, :, 0])
    torch.testing.assert_close(rotation_6d_to_matrix(r6), rot)
    raw = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    out = rotation_6d_to_matrix(raw)
    torch.testing.assert_close(out[..., :, 0], raw[:, :3] / raw[:, :3].norm(dim=-1, keepdim=True))
    torch.testing.assert_close(torch.det(out), torch.ones(4, dtype=torch.float64))


def test_rigid_inverse_round_trips_c2w_and_w2c():
    gen = torch.Generator().manual_seed(2)
    c2w = random_c2w(gen, 5)
    eye = torch.eye(4, dtype=torch.float64).expand(5, 4, 4)
    torch.testing.assert_close(invert_pose(c2w) @ c2w, eye)
    torch.testing.assert_close(c2w @ invert_pose(c2w), eye)
    torch.testing.assert_close(invert_pose(invert_pose(c2w)), c2w)


def test_relative_poses_do_not_depend_on_the_world_frame():
    """Cameras relative to view 0 (ref_w2c @ c2w): view 0 becomes I and moving the whole world changes nothing."""
    gen = torch.Generator().manual_seed(3)
    c2w = random_c2w(gen, 4)[None]
    world = random_c2w(gen, 1)[0]
    rel = relative_c2w(c2w)
    torch.testing.assert_close(rel[0, 0], torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(relative_c2w(world @ c2w), rel)
    torch.testing.assert_close(c2w[0, 0] @ rel[0, 2], c2w[0, 2])


def test_given_cameras_are_relative_to_view0_with_the_farthest_centre_at_one():
    gen = torch.Generator().manual_seed(4)
    c2w = random_c2w(gen, 5)[None]
    out = normalize_given_c2w(c2w)
    dist = out[0, :, :3, 3].norm(dim=-1)
    torch.testing.assert_close(out[0, 0], torch.eye(4, dtype=torch.float64))
    assert dist.max().item() == pytest.approx(1.0, abs=1e-9) and (dist[1:] > 0).all()
    scaled = c2w.clone()
    scaled[..., :3, 3] *= 7.0  # the same scene in other units
    torch.testing.assert_close(normalize_given_c2w(random_c2w(gen, 1)[0] @ scaled), out)


def test_posed_model_uses_the_normalised_given_cameras():
    """model.cameras=given: the dataset's cameras, in any world frame and unit, enter as normalize_given_c2w."""
    cfg = load_config(None, ["model.image_size=16", "model.patch_size=8", "model.dim=32", "model.heads=2",
                             "model.camera_layers=1", "model.scene_layers=1", "model.renderer_layers=1",
                             "model.num_latents=4", "model.num_context_views=2", "model.num_target_views=1",
                             "model.cameras=given"])
    torch.manual_seed(0)
    model = WildRayZerModel(cfg.model).eval()
    gen = torch.Generator().manual_seed(5)
    c2w = random_c2w(gen, 3)[None].float()
    k = torch.tensor([[20.0, 20.0, 8.0, 8.0]]).expand(1, 3, 4)
    x = torch.rand(1, 3, 3, 16, 16, generator=gen)
    with torch.no_grad():
        out = model(x, 2, cameras={"c2w": c2w, "fxfycxcy": k})
        moved = c2w.clone()
        moved[..., :3, 3] *= 3.0
        moved = random_c2w(gen, 1)[0].float() @ moved
        again = model(x, 2, cameras={"c2w": moved, "fxfycxcy": k})
    torch.testing.assert_close(out["cameras"]["c2w"], normalize_given_c2w(c2w))
    torch.testing.assert_close(out["renders"], again["renders"], atol=1e-5, rtol=0)
    # the scene comes from the context views alone: a target's own photo never reaches its render
    y = x.clone()
    y[:, 2] = torch.rand(3, 16, 16, generator=gen)
    z = x.clone()
    z[:, 1] = torch.rand(3, 16, 16, generator=gen)
    with torch.no_grad():
        with_other_target = model(y, 2, cameras={"c2w": c2w, "fxfycxcy": k})["renders"]
        with_other_context = model(z, 2, cameras={"c2w": c2w, "fxfycxcy": k})["renders"]
    torch.testing.assert_close(with_other_target, out["renders"])
    assert not torch.allclose(with_other_context, out["renders"], atol=1e-6)


# ------------------------------------------------------------------ intrinsics


def test_normalised_focal_is_relative_to_the_width_and_the_principal_point_is_the_centre():
    k = fxfycxcy_from_normalized_focal(torch.tensor([1.25]), height=24, width=40)
    torch.testing.assert_close(k, torch.tensor([[50.0, 50.0, 20.0, 12.0]]))


def test_intrinsics_follow_resize_and_crop():
    k = torch.tensor([100.0, 80.0, 60.0, 40.0])
    torch.testing.assert_close(scale_fxfycxcy(k, 0.5, 0.25), torch.tensor([50.0, 20.0, 30.0, 10.0]))
    torch.testing.assert_close(crop_fxfycxcy(k, 5.0, 3.0), torch.tensor([100.0, 80.0, 55.0, 37.0]))


def test_resize_then_centre_crop_keeps_the_centre():
    """Frames are resized (short side) then centre-cropped: a centred principal point stays centred, and the pixel
    at the original image centre lands at the crop's centre."""
    torch.testing.assert_close(adjust_intrinsics(torch.tensor([64.0, 64.0, 40.0, 24.0]), 48, 80, 32),
                               torch.tensor([64.0 * 32 / 48, 64.0 * 32 / 48, 16.0, 16.0]), atol=0.6, rtol=0)  # rounding
    img = np.zeros((48, 80, 3), np.uint8)
    img[20:28, 36:44] = 255  # a bright square around the centre (40, 24)
    out = resize_crop(img, 32)
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert abs(ys.mean() - 15.5) < 1 and abs(xs.mean() - 15.5) < 1


# ------------------------------------------------------------------ data conventions


@pytest.fixture(scope="module")
def wide_scene(tmp_path_factory):
    """One LVSM-layout scene, 10 frames of 64x48 pixels, random w2c, fxfycxcy in pixels."""
    root = tmp_path_factory.mktemp("lvsm")
    split = root / "train"
    (split / "images" / "s").mkdir(parents=True)
    (split / "metadata").mkdir()
    gen = torch.Generator().manual_seed(6)
    w2c = random_c2w(gen, 10)
    frames = []
    for i in range(10):
        Image.new("RGB", (64, 48), (20 * i, 100, 50)).save(split / "images" / "s" / f"{i:05d}.png")
        frames.append({"image_path": f"images/s/{i:05d}.png", "fxfycxcy": [60.0 + i, 50.0, 32.0 + i, 24.0],
                       "w2c": w2c[i].tolist()})
    (split / "metadata" / "s.json").write_text(json.dumps({"scene_name": "s", "frames": frames}))
    (split / "full_list.txt").write_text("metadata/s.json\n")
    return root, w2c, frames


def _lvsm_cfg(root, *extra):
    return load_config(None, [f"data.root={root}", "data.split=train", "model.image_size=32", "model.patch_size=8",
                              "model.num_context_views=2", "model.num_target_views=3", "data.frame_gap_min=4",
                              "data.frame_gap_max=5", *extra])


def test_metadata_holds_w2c_and_items_hold_c2w_and_resized_intrinsics(wide_scene):
    root, w2c, frames = wide_scene
    item = build_dataset(_lvsm_cfg(root), "eval")[0]
    idx = item["frame_idx"].tolist()
    torch.testing.assert_close(item["c2w"], torch.linalg.inv(w2c[idx]).float(), atol=1e-5, rtol=0)
    # 64x48 -> 43x32 (scale 2/3), then (43 - 32) // 2 = 5 columns cropped off the left
    want = torch.tensor([[(60.0 + i) * 43 / 64, 50.0 * 32 / 48, (32.0 + i) * 43 / 64 - 5, 24.0 * 32 / 48]
                         for i in idx])
    torch.testing.assert_close(item["fxfycxcy"], want)


def test_training_targets_lie_inside_the_context_window(wide_scene):
    """Training views: the context frames are the two ends of a window of frame_gap_min..max frames, the targets are
    drawn inside it (interpolation, as RE10K practice)."""
    root, _, _ = wide_scene
    ds = build_dataset(_lvsm_cfg(root), "train")
    for draw in range(12):
        idx = ds[0]["frame_idx"].tolist()
        ctx, tgt = idx[:2], idx[2:]
        assert 4 <= ctx[1] - ctx[0] <= 5, idx
        assert all(ctx[0] < t < ctx[1] for t in tgt), (draw, idx)


# ------------------------------------------------------------------ pose metrics


def test_pose_error_is_zero_up_to_a_similarity_and_positive_otherwise():
    """Predicted cameras are neither metric nor in the dataset's world frame: errors are measured relative to view 0
    and after a Sim(3) (scale included) alignment of the centres."""
    gen = torch.Generator().manual_seed(7)
    gt = random_c2w(gen, 5)
    sim = random_c2w(gen, 1)[0]
    pred = sim @ gt.clone()
    pred[:, :3, 3] *= 0.3  # another world frame and another unit
    pred = pred.float()
    err = pose_metrics(pred, gt.float())
    assert err["pose_rot_deg"] < 0.1 and err["pose_trans_rel"] < 1e-4, err
    bad = pred.clone()
    bad[2, :3, 3] += torch.tensor([0.5, 0.0, 0.0])
    bad[3, :3, :3] = bad[3, :3, :3] @ torch.tensor([[math.cos(0.3), -math.sin(0.3), 0], [math.sin(0.3),
                                                     math.cos(0.3), 0], [0, 0, 1.0]])
    worse = pose_metrics(bad, gt.float())
    assert worse["pose_rot_deg"] > 1.0 and worse["pose_trans_rel"] > 1e-2, worse
