import math

import pytest
import torch

from wildrayzer import geometry as G

torch.manual_seed(0)


def random_rotation(n: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    q[torch.det(q) < 0, :, 2] *= -1
    return q


def random_c2w(n: int) -> torch.Tensor:
    return G.make_pose(random_rotation(n), torch.randn(n, 3, dtype=torch.float64))


def test_6d_round_trip_and_orthonormal():
    rot = random_rotation(16)
    back = G.rotation_6d_to_matrix(G.matrix_to_rotation_6d(rot))
    assert torch.allclose(back, rot, atol=1e-10)
    r = G.rotation_6d_to_matrix(torch.randn(32, 6, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64).expand(32, 3, 3)
    assert torch.allclose(r.transpose(-1, -2) @ r, eye, atol=1e-10)
    assert torch.allclose(torch.det(r), torch.ones(32, dtype=torch.float64), atol=1e-10)


def test_6d_of_zero_offset_plus_identity_is_identity():
    ident6 = G.matrix_to_rotation_6d(torch.eye(3))
    assert torch.allclose(G.rotation_6d_to_matrix(ident6), torch.eye(3))


def test_invert_and_w2c_round_trip():
    c2w = random_c2w(8)
    w2c = G.c2w_to_w2c(c2w)
    assert torch.allclose(w2c, torch.linalg.inv(c2w), atol=1e-10)
    assert torch.allclose(G.w2c_to_c2w(w2c), c2w, atol=1e-10)
    assert torch.allclose(G.compose_poses(c2w, w2c), torch.eye(4, dtype=torch.float64).expand(8, 4, 4), atol=1e-10)


def test_relative_c2w_makes_reference_identity_and_keeps_relative_motion():
    c2w = random_c2w(5).view(1, 5, 4, 4)
    rel = G.relative_c2w(c2w)
    assert torch.allclose(rel[0, 0], torch.eye(4, dtype=torch.float64), atol=1e-10)
    # relative transform between two views is unchanged
    a = torch.linalg.inv(c2w[0, 1]) @ c2w[0, 3]
    b = torch.linalg.inv(rel[0, 1]) @ rel[0, 3]
    assert torch.allclose(a, b, atol=1e-10)


def test_intrinsics_helpers():
    f = torch.tensor([0.5, 1.0])
    k = G.fxfycxcy_from_normalized_focal(f, height=48, width=64)
    assert torch.allclose(k, torch.tensor([[32.0, 32.0, 32.0, 24.0], [64.0, 64.0, 32.0, 24.0]]))
    assert torch.allclose(G.normalized_focal_from_fxfycxcy(k, 64), f)
    mat = G.intrinsics_matrix_from_fxfycxcy(k)
    assert mat.shape == (2, 3, 3) and mat[1, 0, 0] == 64 and mat[1, 1, 2] == 24 and mat[1, 2, 2] == 1
    scaled = G.scale_fxfycxcy(k, 0.5, 0.5)
    assert torch.allclose(scaled[0], torch.tensor([16.0, 16.0, 16.0, 12.0]))
    assert torch.allclose(G.crop_fxfycxcy(k, 8, 4)[0], torch.tensor([32.0, 32.0, 24.0, 20.0]))


def slow_rays(c2w, fxfycxcy, h, w):
    out = torch.zeros(h, w, 6, dtype=c2w.dtype)
    fx, fy, cx, cy = fxfycxcy.tolist()
    for v in range(h):
        for u in range(w):
            d_cam = torch.tensor([(u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1.0], dtype=c2w.dtype)
            d = c2w[:3, :3] @ d_cam
            d = d / d.norm()
            o = c2w[:3, 3]
            out[v, u] = torch.cat([torch.linalg.cross(o, d), d])
    return out


def test_plucker_matches_per_pixel_loop():
    c2w = random_c2w(2)
    k = torch.tensor([[20.0, 22.0, 7.5, 5.0], [9.0, 9.0, 8.0, 6.0]], dtype=torch.float64)
    fast = G.plucker_rays(c2w, k, 10, 14)
    assert fast.shape == (2, 10, 14, 6)
    for i in range(2):
        assert torch.allclose(fast[i], slow_rays(c2w[i], k[i], 10, 14), atol=1e-10)


def test_plucker_invariants_and_analytic_values():
    c2w = random_c2w(3)
    k = torch.tensor([30.0, 30.0, 16.0, 12.0], dtype=torch.float64).expand(3, 4)
    p = G.plucker_rays(c2w, k, 24, 32)
    m, d = p[..., :3], p[..., 3:]
    assert torch.allclose(d.norm(dim=-1), torch.ones_like(d[..., 0]), atol=1e-10)
    assert (m * d).sum(-1).abs().max() < 1e-10  # Klein quadric: m . d = 0
    # identity camera: o = 0 so moments vanish; the centre ray (pixel centres straddle cx) is ~ +z
    ident = G.plucker_rays(torch.eye(4, dtype=torch.float64), k[0], 24, 32)
    assert ident[..., :3].abs().max() == 0
    cx_ray = G.plucker_rays(torch.eye(4, dtype=torch.float64), torch.tensor([30.0, 30.0, 0.5, 0.5],
                                                                              dtype=torch.float64), 1, 1)
    assert torch.allclose(cx_ray[0, 0, 3:], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    # translating the camera by t changes the moment by t x d and leaves d alone
    t = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    moved = G.make_pose(torch.eye(3, dtype=torch.float64), t)
    pm = G.plucker_rays(moved, k[0], 24, 32)
    assert torch.allclose(pm[..., 3:], ident[..., 3:])
    assert torch.allclose(pm[..., :3], torch.linalg.cross(t.expand_as(pm[..., 3:]), pm[..., 3:]), atol=1e-12)
    # rotating the camera by R rotates the direction field
    rot = random_rotation(1)[0]
    pr = G.plucker_rays(G.make_pose(rot, torch.zeros(3, dtype=torch.float64)), k[0], 24, 32)
    assert torch.allclose(pr[..., 3:], ident[..., 3:] @ rot.T, atol=1e-12)


def test_plucker_chw_layout():
    c2w = random_c2w(6).view(2, 3, 4, 4).float()
    k = torch.tensor([10.0, 10.0, 4.0, 4.0]).expand(2, 3, 4)
    chw = G.plucker_rays_chw(c2w, k, 8, 8)
    assert chw.shape == (2, 3, 6, 8, 8)
    assert torch.allclose(chw[1, 2, :, 3, 5], G.plucker_rays(c2w[1, 2], k[1, 2], 8, 8)[3, 5])


def test_umeyama_recovers_similarity():
    src = torch.randn(12, 3, dtype=torch.float64)
    rot = random_rotation(1)[0]
    s, t = 2.7, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    dst = s * src @ rot.T + t
    s_hat, r_hat, t_hat = G.umeyama_sim3(src, dst)
    assert abs(float(s_hat) - s) < 1e-9 and torch.allclose(r_hat, rot, atol=1e-9) and torch.allclose(t_hat, t)
    # degenerate: a single point
    s1, r1, t1 = G.umeyama_sim3(src[:1], dst[:1])
    assert float(s1) == 1.0 and torch.allclose(t1, dst[0] - src[0])


def test_pose_errors_zero_for_similar_trajectory_and_positive_otherwise():
    ref = random_c2w(6)
    sim = ref.clone()
    sim[:, :3, 3] *= 3.0  # same trajectory, another scale
    err = G.pose_errors_sim3(sim, ref)
    assert err["rotation_deg"] < 1e-5 and err["translation_rel"] < 1e-8
    ident = torch.eye(4, dtype=torch.float64).expand(6, 4, 4)
    bad = G.pose_errors_sim3(ident, ref)
    assert bad["rotation_deg"] > 1.0 and bad["translation_rel"] > 0.05


def test_rotation_angle():
    rz = torch.tensor([[math.cos(0.3), -math.sin(0.3), 0], [math.sin(0.3), math.cos(0.3), 0], [0, 0, 1]],
                      dtype=torch.float64)
    assert G.rotation_angle_deg(torch.eye(3, dtype=torch.float64), rz).item() == pytest.approx(math.degrees(0.3))


def test_yaw_round_trip_composition_and_direction():
    deg = torch.tensor([-170.0, -30.0, -0.5, 0.0, 12.5, 90.0, 179.0], dtype=torch.float64)
    rot = G.yaw_matrix(deg)  # (7, 3, 3)
    assert torch.allclose(rot @ rot.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(7, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(7, dtype=torch.float64))
    assert torch.allclose(G.yaw_deg(rot), deg, atol=1e-9)
    assert torch.allclose(G.rotation_angle_deg(torch.eye(3, dtype=torch.float64), rot), deg.abs(), atol=1e-5)
    a, b = torch.tensor(20.0, dtype=torch.float64), torch.tensor(-55.0, dtype=torch.float64)
    assert torch.allclose(G.yaw_matrix(a) @ G.yaw_matrix(b), G.yaw_matrix(a + b), atol=1e-12)
    # a positive yaw turns the camera's forward (z) axis towards its right (x); the vertical (y) axis stays
    fwd = G.yaw_matrix(torch.tensor(30.0, dtype=torch.float64))[:, 2]
    assert fwd[0] > 0.49 and fwd[1] == 0 and fwd[2] > 0.86
    # a pitch (about x) has no yaw; yaw then pitch keeps the yaw
    pitch = torch.tensor([[1, 0, 0], [0, math.cos(0.4), -math.sin(0.4)], [0, math.sin(0.4), math.cos(0.4)]],
                         dtype=torch.float64)
    assert G.yaw_deg(pitch).item() == pytest.approx(0.0, abs=1e-9)
    assert G.yaw_deg(G.yaw_matrix(a) @ pitch).item() == pytest.approx(20.0)


def test_slerp_and_interpolation_hit_endpoints_and_stay_rigid():
    c2w = random_c2w(3)
    path = G.interpolate_c2w(c2w, 9)
    assert path.shape == (9, 4, 4)
    assert torch.allclose(path[0], c2w[0], atol=1e-9) and torch.allclose(path[-1], c2w[-1], atol=1e-9)
    assert torch.allclose(path[4], c2w[1], atol=1e-9)  # 9 samples over 2 segments: middle hits view 1
    rots = path[:, :3, :3]
    assert torch.allclose(rots.transpose(-1, -2) @ rots, torch.eye(3, dtype=torch.float64).expand(9, 3, 3), atol=1e-9)
    # constant angular speed within a segment
    mids = G.slerp_rotations(c2w[0, :3, :3], c2w[1, :3, :3], torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64))
    a1 = G.rotation_angle_deg(mids[0], mids[1])
    a2 = G.rotation_angle_deg(mids[1], mids[2])
    assert torch.allclose(a1, a2, atol=1e-6)
