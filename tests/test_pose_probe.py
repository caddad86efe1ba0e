"""The pose probe (``wildrayzer bench poses``): each figure measures what it claims, on trajectories whose answer is
known (the truth itself, its mirror image, identity poses) and end to end on a posed model."""

import math

import pytest
import torch
from tiny_run import REPO, bench_on_static_test, posed_static_test

from wildrayzer.errors import UserError
from wildrayzer.geometry import make_pose, yaw_matrix
from wildrayzer.infer.pose_probe import order_follows, pose_probe, scene_probe, summarise

MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64))


def _trajectory(seed: int, views: int = 8) -> torch.Tensor:
    """A camera walking sideways while it turns (views in time order: context 0, context 1 = the last frame, then
    the targets in between). -> (V, 4, 4) c2w."""
    g = torch.Generator().manual_seed(seed)
    turn = float(torch.empty(()).uniform_(-25, 25, generator=g))
    walk = torch.randn(3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.1, 0.3], dtype=torch.float64)
    inner = torch.rand(views - 2, generator=g, dtype=torch.float64).sort().values  # a scene's own target times
    t = torch.cat([torch.tensor([0.0, 1.0], dtype=torch.float64), inner])
    rot = yaw_matrix(t * turn)
    return make_pose(rot, t[:, None] * walk)


def test_the_truth_scores_perfectly_whatever_the_scale_and_world_frame():
    scenes = []
    for s in range(6):
        true = _trajectory(s)
        pred = true.clone()
        pred[:, :3, 3] *= 3.0  # another unit
        world = make_pose(yaw_matrix(torch.tensor(40.0, dtype=torch.float64)), torch.ones(3, dtype=torch.float64))
        pred = world @ pred
        scenes.append(scene_probe(pred, true, num_context=2))
    out = summarise(scenes)
    assert out["scenes"] == 6 and out["views"] == 42
    assert out["rotation_error_deg"] < 1e-5 and out["identity_rotation_error_deg"] > 2.0
    assert out["yaw_corr"] == pytest.approx(1.0) and out["yaw_sign_agreement"] == 1.0
    assert out["rotation_size_ratio"] == pytest.approx(1.0)
    assert out["progress_step_rank_corr"] == pytest.approx(1.0)
    assert out["progress_turn_rank_corr"] == pytest.approx(1.0)


def test_a_mirror_world_orders_the_targets_but_turns_the_wrong_way():
    """The case the probe exists for: reflected cameras keep every target's place between the context views, so
    rendering alone cannot tell them from the truth, but every yaw has the wrong sign."""
    scenes = [scene_probe(MIRROR @ _trajectory(s) @ MIRROR, _trajectory(s), num_context=2) for s in range(6)]
    out = summarise(scenes)
    assert out["yaw_corr"] == pytest.approx(-1.0) and out["yaw_sign_agreement"] == 0.0
    assert out["rotation_size_ratio"] == pytest.approx(1.0)
    assert out["progress_step_rank_corr"] == pytest.approx(1.0)
    assert out["progress_turn_rank_corr"] == pytest.approx(1.0)
    assert out["rotation_error_deg"] > out["identity_rotation_error_deg"]


def test_identity_poses_have_no_yaw_correlation_and_no_order():
    scenes = [scene_probe(torch.eye(4, dtype=torch.float64).expand(8, 4, 4), _trajectory(s), 2) for s in range(4)]
    out = summarise(scenes)
    assert out["yaw_corr"] is None  # a constant prediction correlates with nothing
    assert out["yaw_sign_agreement"] == 0.0  # and no turn agrees with a turn
    assert out["rotation_size_ratio"] == 0.0
    assert out["rotation_error_deg"] == pytest.approx(out["identity_rotation_error_deg"])
    assert out["progress_step_rank_corr"] is None and out["progress_turn_rank_corr"] is None  # no baseline: skipped
    assert all(s["progress_true"] == [] for s in scenes)


def test_one_context_view_has_no_progress_but_still_yaw():
    out = scene_probe(_trajectory(1), _trajectory(1), num_context=1)
    assert out["progress_true"] == [] and len(out["yaw_true"]) == 7
    assert out["yaw_pred"] == pytest.approx(out["yaw_true"])


@pytest.fixture(scope="module")
def posed(tmp_path_factory):
    return posed_static_test(tmp_path_factory.mktemp("poses"))


def test_a_posed_model_reproduces_the_dataset_cameras_and_its_renderer_reacts_to_a_turn(posed):
    pipe, ds, _ = posed
    out = pose_probe(pipe, ds, progress=False)
    assert out["scenes"] == 1 and out["rotation_error_deg"] < 0.05
    assert out["yaw_corr"] == pytest.approx(1.0, abs=1e-4)
    assert out["progress_step_rank_corr"] == pytest.approx(1.0)
    assert out["turn_change"] > 0.01 and out["step_change"] > 0.0 and out["first_view_change"] > 0.01
    assert math.isfinite(out["turn_psnr_drop"]) and math.isfinite(out["step_psnr_drop"])
    still = pose_probe(pipe, ds, progress=False, turn_deg=0.0, step=0.0)
    assert still["turn_change"] == 0.0 and still["step_change"] == 0.0 and still["turn_psnr_drop"] == 0.0
    assert "turn_change" not in pose_probe(pipe, ds, progress=False, sensitivity=False)


def test_reversed_targets_tell_image_following_from_slot_following_cameras(posed):
    """A posed model's cameras are the images' own: reversed, each keeps its place (image = 1). An estimator that
    returns one pose per slot whatever the images (here: the time-ordered true cameras) keeps the slot's (slot = 1)."""
    pipe, ds, _ = posed
    item = ds[0]
    vc = pipe.num_context
    places = scene_probe(item["c2w"], item["c2w"], vc)["progress_step"]
    assert order_follows(pipe, item, places) == {"image": pytest.approx(1.0), "slot": pytest.approx(-1.0, abs=0.3)}

    class PerSlot:  # the same cameras for every input, like an estimator that reads only the view index
        num_context, model, device = vc, pipe.model, pipe.device

        @staticmethod
        def run(images, cameras=None, apply_mae=None):
            return {"cameras": {"c2w": item["c2w"][None]}}

    assert order_follows(PerSlot, item, places)["slot"] == pytest.approx(1.0)
    assert pose_probe(pipe, ds, progress=False, sensitivity=False)["order_follows_image"] == pytest.approx(1.0)


def test_an_empty_dataset_is_a_user_error(posed):
    with pytest.raises(UserError, match="no scenes"):
        pose_probe(posed[0], [], progress=False)


def test_bench_poses_writes_its_table(posed, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    md, _ = bench_on_static_test("poses", posed[2], tmp_path)
    assert md.startswith("| model | scenes | rot err (deg) |")
