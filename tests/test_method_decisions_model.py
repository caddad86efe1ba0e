"""Method decisions, the model (docs/METHOD_DECISIONS.md): the shared tokenizer, the camera estimator (view 0 = I,
residual 6D poses, one focal from view 0), scene latents, independent targets, the motion head (per view, starts
static, targets through the renderer's Plücker tokens) and MAE noise-token masking. Each test fails when the decision
it names is flipped (``make mutate``)."""

from __future__ import annotations

import pytest
import torch
from tiny_run import MICRO_MODEL

from wildrayzer.config import load_config
from wildrayzer.geometry import fxfycxcy_from_normalized_focal, make_pose, rotation_6d_to_matrix
from wildrayzer.model import WildRayZerModel
from wildrayzer.model.camera import CameraEstimator
from wildrayzer.model.motion import INITIAL_MOTION_PROB, MotionEstimator
from wildrayzer.nn import patchify, unpatchify

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = MICRO_MODEL


def tiny(*extra, seed=0) -> WildRayZerModel:
    torch.manual_seed(seed)
    return WildRayZerModel(load_config(None, TINY + list(extra)).model).eval()


def images(b=1, v=5, seed=0):
    return torch.rand(b, v, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ tokenizer


def test_tokenizer_embeds_images_in_the_signed_range():
    """Pixels enter as 2 img - 1: a mid-grey image has a zero patch embedding, its tokens are the position
    embedding alone."""
    model = tiny()
    grey = torch.full((1, 2, 3, 32, 32), 0.5)
    pe = model.tokenizer.position_embedding(2, 4, 4, grey.device)
    with torch.no_grad():
        torch.testing.assert_close(model.tokenizer(grey)[0], pe)
        assert not torch.allclose(model.tokenizer(torch.zeros_like(grey))[0], pe)


def test_each_token_carries_its_view_index():
    """The same image as view 0 and as view 1 gives different tokens (view 0 is the canonical camera)."""
    model = tiny()
    x = images(v=1).expand(1, 3, 3, 32, 32)
    with torch.no_grad():
        t = model.tokenizer(x)[0]
    assert not torch.allclose(t[0], t[1], atol=1e-4) and not torch.allclose(t[1], t[2], atol=1e-4)


def test_patches_are_flattened_row_major_as_ph_pw_c():
    x = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(1, 1, 3, 4, 4)  # (B, V, C, H, W)
    tok = patchify(x, 2)  # 4 patches of 2x2x3
    assert tok.shape == (1, 1, 4, 12)
    # patch 1 is the top-right one; inside it pixel (0, 0) then (0, 1), each as its 3 channels
    torch.testing.assert_close(tok[0, 0, 1, :6], torch.stack([x[0, 0, :, 0, 2], x[0, 0, :, 0, 3]]).reshape(-1))
    torch.testing.assert_close(unpatchify(tok, 2, 4, 4), x)


# ------------------------------------------------------------------ camera estimator


def _perturbed_heads(cam: CameraEstimator, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (cam.pose_head, cam.focal_head):
            head[-1].weight.copy_(torch.randn(head[-1].weight.shape, generator=gen) * 0.5)
            head[-1].bias.copy_(torch.randn(head[-1].bias.shape, generator=gen) * 0.1)


def test_view0_camera_is_exactly_the_identity():
    """Poses are relative to view 0: its c2w is I bit for bit, whatever the pose head predicts."""
    model = tiny()
    _perturbed_heads(model.camera)
    with torch.no_grad():
        c2w = model(images(b=2), 2, render_targets=False)["cameras"]["c2w"]
    assert torch.equal(c2w[:, 0], torch.eye(4).expand(2, 4, 4))
    assert not torch.allclose(c2w[:, 1], torch.eye(4).expand(2, 4, 4), atol=1e-3)


def test_untrained_estimator_predicts_identity_poses_and_the_offset_focal():
    """The pose head predicts a residual added to the identity (zero-initialised), the focal f = mlp + 1.25 with
    fx = fy = f W and the principal point at the centre."""
    model = tiny()
    with torch.no_grad():
        cams = model(images(), 2, render_targets=False)["cameras"]
    torch.testing.assert_close(cams["c2w"], torch.eye(4).expand(1, 5, 4, 4))
    torch.testing.assert_close(cams["fxfycxcy"], torch.tensor([1.25 * 32, 1.25 * 32, 16.0, 16.0]).expand(1, 5, 4))


def test_pose_head_reads_canonical_then_view_token_and_focal_comes_from_view0():
    """With no transformer layers the camera tokens are known: view i's pose is I + head([token 0 | token i]), the
    scene's focal is focal_head(token 0) + 1.25, shared by every view."""
    torch.manual_seed(0)
    cam = CameraEstimator(16, heads=2, depth=0, num_views=3)
    _perturbed_heads(cam)
    with torch.no_grad():
        image_tokens = torch.randn(1, 3, 4, 16)
        out = cam(image_tokens, 8, 8)
        tok = cam.camera_tokens(image_tokens)[0]
        rt = cam.identity_rt + cam.pose_head(torch.cat([tok[0].expand(2, -1), tok[1:]], dim=-1))
        want = make_pose(rotation_6d_to_matrix(rt[:, :6]), rt[:, 6:])
        f = cam.focal_head(tok[:1])[0, 0] + 1.25
    torch.testing.assert_close(out["c2w"][0, 1:], want)
    torch.testing.assert_close(out["fxfycxcy"][0], fxfycxcy_from_normalized_focal(f.expand(3), 8, 8))


def test_camera_tokens_carry_their_view_index():
    """Views with identical image tokens still get their own camera tokens, hence their own poses."""
    torch.manual_seed(0)
    cam = CameraEstimator(16, heads=2, depth=1, num_views=3)
    _perturbed_heads(cam)
    with torch.no_grad():
        cam.view_pe_mlp[-1].weight.mul_(200.0)  # make the view-index signal large next to the shared token
        c2w = cam(torch.randn(1, 1, 4, 16).expand(1, 3, 4, 16), 8, 8)["c2w"]
    assert (c2w[0, 1] - c2w[0, 2]).abs().max() > 1e-3


def test_own_view_camera_query_starts_as_the_release_and_reads_only_its_own_view():
    """model.camera_query=own_view adds a zero-initialised attention pool over each view's own image tokens: fresh, it
    predicts exactly what the release's estimator does; trained (pool output non-zero, no transformer layers), a
    change of one view's image moves that view's camera alone, where the release's tokens do not see it at all."""
    torch.manual_seed(0)
    release = CameraEstimator(16, heads=2, depth=1, num_views=3)
    own = CameraEstimator(16, heads=2, depth=1, num_views=3, query="own_view")
    assert set(own.state_dict()) - set(release.state_dict()) == {
        f"own_view_pool.{k}" for k in ("query", "norm.weight", "kv.weight", "q_norm.weight", "k_norm.weight",
                                       "proj.weight")}
    own.load_state_dict(release.state_dict(), strict=False)
    _perturbed_heads(release)
    _perturbed_heads(own)
    x = torch.randn(1, 3, 4, 16)
    with torch.no_grad():
        torch.testing.assert_close(own(x, 8, 8)["c2w"], release(x, 8, 8)["c2w"], rtol=0, atol=0)

    y = x.clone()
    y[:, 2] = torch.randn(4, 16)  # only view 2's image changes
    for cam, moves in ((CameraEstimator(16, heads=2, depth=0, num_views=3), False),
                       (CameraEstimator(16, heads=2, depth=0, num_views=3, query="own_view"), True)):
        _perturbed_heads(cam)
        with torch.no_grad():
            if cam.own_view_pool is not None:
                cam.own_view_pool.proj.weight.normal_(0, 1.0)
            a, b = cam(x, 8, 8)["c2w"][0], cam(y, 8, 8)["c2w"][0]
        torch.testing.assert_close(a[:2], b[:2], rtol=0, atol=0)  # views 0 and 1 keep their cameras
        assert ((a[2] - b[2]).abs().max() > 1e-3) == moves


def test_camera_query_is_a_checked_choice():
    with pytest.raises(ValueError, match="view_index or own_view"):
        CameraEstimator(16, heads=2, depth=0, num_views=3, query="own")


# ------------------------------------------------------------------ scene encoder and renderer


def test_scene_representation_is_the_learned_latents():
    """The scene encoder returns its latent tokens (not the image tokens): permuting the latent parameters permutes
    the scene representation the same way."""
    model = tiny()
    x = images(v=2)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model(x, 2)["scene_tokens"]
        model.scene.latents.copy_(model.scene.latents[perm])
        b = model(x, 2)["scene_tokens"]
    torch.testing.assert_close(b, a[:, perm], atol=1e-5, rtol=1e-5)


def test_targets_are_rendered_independently():
    """A target's render depends on the scene and its own rays only, not on which other targets are rendered."""
    model = tiny()
    with torch.no_grad():
        scene = model(images(v=2), 2)["scene_tokens"]
        gen = torch.Generator().manual_seed(2)
        c2w = make_pose(rotation_6d_to_matrix(torch.randn(1, 3, 6, generator=gen)), torch.randn(1, 3, 3, generator=gen))
        k = torch.tensor([40.0, 40.0, 16.0, 16.0]).expand(1, 3, 4)
        ab = model.render(scene, c2w[:, :2], k[:, :2])
        ac = model.render(scene, c2w[:, [0, 2]], k[:, :2])
    torch.testing.assert_close(ab[:, 0], ac[:, 0], atol=1e-6, rtol=0)
    assert not torch.allclose(ab[:, 1], ac[:, 1], atol=1e-3)


def test_renders_are_colours_in_the_unit_range():
    model = tiny()
    with torch.no_grad():
        model.renderer.head.weight.mul_(200.0)  # push the logits far out
        r = model(images(), 2)["renders"]
    assert r.min() >= 0 and r.max() <= 1 and (r < 0.01).any() and (r > 0.99).any()


# ------------------------------------------------------------------ motion head and token masking


def test_untrained_motion_head_predicts_static_and_masks_no_token():
    model = tiny("model.use_motion_mask=true", "model.use_mae_masking=true")
    with torch.no_grad():
        out = model(images(), 2, motion_all_views=True)
    probs = torch.sigmoid(out["motion_logits"])
    assert (probs - INITIAL_MOTION_PROB).abs().max() < 0.01
    assert out["token_mask"] is not None and not out["token_mask"].any()


def test_motion_head_sees_one_view_at_a_time():
    """No attention across views: changing view 1's inputs leaves view 0's mask unchanged."""
    torch.manual_seed(0)
    head = MotionEstimator(32, heads=2, depth=1, patch_size=8, semantic_dim=0).eval()
    img, pl = torch.randn(1, 2, 16, 32), torch.randn(1, 2, 16, 32)
    img2 = img.clone()
    img2[:, 1] = torch.randn(16, 32)
    with torch.no_grad():
        a, b = head(None, img, pl, 32, 32), head(None, img2, pl, 32, 32)
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert not torch.allclose(a[:, 1], b[:, 1])


def test_target_masks_read_the_renderer_plucker_tokens():
    """Targets' motion masks get their Plücker tokens from the renderer's tokenizer, the context views' from the
    scene encoder's (as in the release)."""
    model = tiny("model.use_motion_mask=true")
    x = images()
    with torch.no_grad():
        model.motion.plucker_proj[1].weight.mul_(20.0)  # make the Plücker modality count
        a = model(x, 2, motion_all_views=True, render_targets=False)["motion_logits"]
        model.renderer.plucker_embed.proj.weight.mul_(-3.0)
        b = model(x, 2, motion_all_views=True, render_targets=False)["motion_logits"]
    torch.testing.assert_close(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2:], b[:, 2:], atol=1e-4)


def test_context_masks_read_the_renderer_plucker_tokens_when_asked():
    """model.motion_context_rays=renderer: the context views' masks read the renderer's Plücker tokens too, as the
    targets' do (where pseudo-labels train the head); nothing else of the forward changes."""
    model = tiny("model.use_motion_mask=true")
    x = images()
    with torch.no_grad():
        model.motion.plucker_proj[1].weight.mul_(20.0)
        scene = model(x, 2, motion_all_views=True)
        model.motion_context_rays = "renderer"
        rend = model(x, 2, motion_all_views=True)
        model.renderer.plucker_embed.proj.weight.mul_(-3.0)
        moved = model(x, 2, motion_all_views=True, render_targets=False)["motion_logits"]
    assert not torch.allclose(scene["motion_logits"][:, :2], rend["motion_logits"][:, :2], atol=1e-4)
    torch.testing.assert_close(scene["motion_logits"][:, 2:], rend["motion_logits"][:, 2:])
    torch.testing.assert_close(scene["renders"], rend["renders"])  # no MAE here: the scene encoder is untouched
    assert not torch.allclose(moved[:, :2], rend["motion_logits"][:, :2], atol=1e-4)


def _fused_inputs(model, x, **kw):
    seen = []
    hook = model.scene.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        out = model(x, 2, render_targets=False, **kw)
    hook.remove()
    return seen[0], out


def test_only_moving_patches_are_replaced_by_the_noise_token():
    model = tiny("model.use_mae_masking=true", "model.mask_token_threshold=0.1")
    with torch.no_grad():
        model.noise_token.normal_()
    x = images()
    probs = torch.zeros(1, 2, 1, 32, 32)
    probs[0, 1, :, 8:16, 16:24] = 1.0  # view 1, token (row 1, col 2) = index 6
    masked, out = _fused_inputs(model, x, motion_probs=probs)
    plain, _ = _fused_inputs(model, x, apply_mae=False)
    want = torch.zeros(1, 2, 16, dtype=torch.bool)
    want[0, 1, 6] = True
    assert torch.equal(out["token_mask"], want)
    assert torch.equal(masked[0, 1, 6], model.noise_token.detach())
    assert torch.equal(masked[~want], plain[~want])


class _ViewMotion(torch.nn.Module):
    """A stand-in motion head: 'static' (-10) for the first call (context views), 'moving' (+10) for the second
    (targets, with motion_all_views)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, sem, tokens, plucker, h, w):
        self.calls += 1
        return torch.full((*tokens.shape[:2], 1, h, w), -10.0 if self.calls == 1 else 10.0)


def test_token_masks_come_from_the_context_views_own_masks():
    """Only the context views feed the scene, so their own masks (not the targets') decide which tokens are masked."""
    model = tiny("model.use_motion_mask=true", "model.use_mae_masking=true")
    model.motion = _ViewMotion()
    with torch.no_grad():
        out = model(images(), 2, motion_all_views=True, render_targets=False)
    assert out["motion_logits"].shape[1] == 5 and (out["motion_logits"][:, 2:] > 0).all()
    assert out["token_mask"].shape == (1, 2, 16) and not out["token_mask"].any()


def test_token_rule_pools_probabilities_over_each_patch():
    """A token is masked when the mean motion probability over its patch exceeds the threshold (0.1): a few moving
    pixels do not mask a patch, a fifth of a patch does, and so does a low probability everywhere."""
    model = tiny("model.use_mae_masking=true", "model.mask_token_threshold=0.1")
    probs = torch.zeros(1, 2, 1, 32, 32)
    probs[0, 0, :, 0:1, 0:4] = 1.0  # 4 of 64 pixels of token 0: mean 0.06
    probs[0, 0, :, 0:2, 8:16] = 1.0  # 16 of 64 pixels of token 1: mean 0.25
    mask = model.token_mask_from_probs(probs, (4, 4))
    assert not mask[0, 0, 0] and mask[0, 0, 1] and mask.sum() == 1
    assert model.token_mask_from_probs(torch.full_like(probs, 0.3), (4, 4)).all()
    assert not model.token_mask_from_probs(torch.full_like(probs, 0.05), (4, 4)).any()
