"""Tiny-model forward/backward, identity init, renderer independence, view-count checks, MAE noise-token masking."""

import pytest
import torch
from tiny_run import TINY_MODEL

from wildrayzer.config import load_config
from wildrayzer.errors import ConfigError
from wildrayzer.model import WildRayZerModel
from wildrayzer.train.losses import mask_bce_loss, mse_loss
from wildrayzer.train.stages import apply_trainable

TINY = [*TINY_MODEL, "model.motion_layers=1", "model.num_context_views=2", "model.num_target_views=3",
        "model.motion_heads=4"]


def tiny_cfg(*extra):
    return load_config(None, TINY + list(extra))


def images(b=2, v=5, size=32, seed=0):
    return torch.rand(b, v, 3, size, size, generator=torch.Generator().manual_seed(seed))


def cameras(model, x):
    """The camera estimator on the shared tokenizer's tokens, as the composition root calls it."""
    return model.camera(model.tokenizer(x), x.shape[-2], x.shape[-1])


def check_grads(model, names):
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.split(".")[0] in names}
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{n} got no gradient"
            assert torch.isfinite(p.grad).all(), n
        else:
            assert p.grad is None, f"frozen {n} got a gradient"


def test_stage1_forward_backward_every_trainable_param_gets_grad():
    torch.manual_seed(0)
    model = WildRayZerModel(tiny_cfg().model)
    names = apply_trainable(model, 1)
    assert names == ["tokenizer", "camera", "scene", "renderer"]
    x = images()
    out = model(x, 2)
    assert out["renders"].shape == (2, 3, 3, 32, 32)
    assert out["scene_tokens"].shape == (2, 16, 64)
    assert out["motion_logits"] is None and out["token_mask"] is None
    assert torch.isfinite(out["renders"]).all()
    mse_loss(out["renders"], x[:, 2:]).backward()
    check_grads(model, names)
    # the zero-initialised pose head still gets a signal through the Plücker rays
    assert model.camera.pose_head[-1].weight.grad.abs().sum() > 0


def test_own_view_camera_query_trains_in_stage1():
    """Every parameter of the own-view pool gets a gradient once its zero-initialised output has moved."""
    torch.manual_seed(0)
    model = WildRayZerModel(tiny_cfg("model.camera_query=own_view").model)
    names = apply_trainable(model, 1)
    with torch.no_grad():
        model.camera.pose_head[-1].weight.normal_(0, 0.1)
        model.camera.own_view_pool.proj.weight.normal_(0, 0.1)
    x = images()
    mse_loss(model(x, 2)["renders"], x[:, 2:]).backward()
    check_grads(model, names)
    for p in model.camera.own_view_pool.parameters():
        assert p.grad.abs().sum() > 0


@pytest.mark.parametrize("stage", [2, 3])
def test_stage2_and_3_gradients_with_motion_estimator(stage):
    torch.manual_seed(0)
    model = WildRayZerModel(tiny_cfg("model.use_motion_mask=true", "model.use_mae_masking=true").model, semantic_dim=0)
    names = apply_trainable(model, stage)
    x = images()
    out = model(x, 2)
    assert out["motion_logits"].shape == (2, 2, 1, 32, 32)
    assert out["token_mask"].shape == (2, 2, 16) and out["token_mask"].dtype == torch.bool
    target = (torch.rand(2, 2, 1, 32, 32) > 0.7).float()
    loss, logs = mask_bce_loss(out["motion_logits"], target, valid=torch.tensor([[True, False], [True, True]]))
    if stage == 3:
        loss = loss + mse_loss(out["renders"], x[:, 2:], 1 - torch.zeros(2, 3, 1, 32, 32))
    loss.backward()
    assert 0 < logs["mask_valid_frac"] < 1
    check_grads(model, names)


def test_untrained_camera_estimator_gives_identity_poses_and_offset_focal():
    cfg = tiny_cfg()
    cams = cameras(WildRayZerModel(cfg.model), images())
    eye = torch.eye(4).expand(2, 5, 4, 4)
    assert torch.equal(cams["c2w"][:, 0], eye[:, 0])
    torch.testing.assert_close(cams["c2w"], eye, atol=1e-6, rtol=0)
    f = cfg.model.focal_offset * 32
    torch.testing.assert_close(cams["fxfycxcy"], torch.tensor([f, f, 16.0, 16.0]).expand(2, 5, 4))


def test_renderer_targets_are_independent_and_linear_in_count():
    torch.manual_seed(0)
    model = WildRayZerModel(tiny_cfg().model).eval()
    x = images()
    with torch.no_grad():
        out = model(x, 2)
        cams = out["cameras"]
        both = model.render(out["scene_tokens"], cams["c2w"][:, 2:4], cams["fxfycxcy"][:, 2:4])
        alone = model.render(out["scene_tokens"], cams["c2w"][:, 2:3], cams["fxfycxcy"][:, 2:3])
        many = model.render(out["scene_tokens"], cams["c2w"][:, 2:3].expand(2, 7, 4, 4),
                            cams["fxfycxcy"][:, 2:3].expand(2, 7, 4))
    assert both.shape == (2, 2, 3, 32, 32) and many.shape == (2, 7, 3, 32, 32)
    torch.testing.assert_close(alone[:, 0], both[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(many, alone.expand_as(many), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["renders"][:, :2], both, atol=1e-5, rtol=0)


def test_view_count_mismatch_is_a_clear_error():
    model = WildRayZerModel(tiny_cfg().model)
    with pytest.raises(ConfigError, match="num_context_views=2 \\+ model.num_target_views=3"):
        model(images(v=6), 2)
    with pytest.raises(ConfigError, match="got 3 \\+ 2"):
        model(images(), 3)
    with pytest.raises(ConfigError, match="got 2 \\+ 1"):
        model(images(v=3), 2)
    ctx_only = model(images(v=2), 2)  # context alone: cameras + scene, nothing to render
    assert ctx_only["renders"] is None and ctx_only["cameras"]["c2w"].shape == (2, 2, 4, 4)


def test_mae_masking_replaces_moving_tokens_by_the_noise_token():
    torch.manual_seed(0)
    cfg = tiny_cfg("model.use_mae_masking=true", "model.mask_token_threshold=0.1")
    model = WildRayZerModel(cfg.model)
    assert "noise_token" in model.state_dict()
    x = images()
    probs = torch.zeros(2, 2, 1, 32, 32)
    probs[0, 1, :, :8, :8] = 1.0  # one full patch (token 0 of view 1)
    probs[1, 0, :, 8:9, 8:9] = 1.0  # 1/64 of a patch: below the threshold
    out = model(x, 2, motion_probs=probs)
    mask = out["token_mask"]
    assert mask.sum() == 1 and mask[0, 1, 0]
    # the release's rule pools probabilities, not decisions: 0.3 everywhere is above 0.1 in every patch
    assert model(x, 2, motion_probs=torch.full_like(probs, 0.3))["token_mask"].all()
    model.mask_token_threshold = 0.5
    assert not model(x, 2, motion_probs=torch.full_like(probs, 0.3))["token_mask"].any()
    model.mask_token_threshold = 0.1
    # a call's own threshold (the labeller's) wins for that call alone
    assert not model(x, 2, motion_probs=torch.full_like(probs, 0.3), mask_token_threshold=0.5)["token_mask"].any()
    assert model.mask_token_threshold == 0.1
    # exactly the masked fused scene-input token is replaced, whole, by the noise token; every other is untouched
    seen = []
    hook = model.scene.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        model(x, 2, motion_probs=probs, render_targets=False)
        model(x, 2, render_targets=False, apply_mae=False)
    hook.remove()
    masked, plain_fused = seen
    assert torch.equal(masked[0, 1, 0], model.noise_token.detach())
    keep = torch.ones(2, 2, 16, dtype=torch.bool)
    keep[0, 1, 0] = False
    assert torch.equal(masked[keep], plain_fused[keep])
    out["scene_tokens"].sum().backward()
    assert model.noise_token.grad is not None and model.noise_token.grad.abs().sum() > 0
    # no motion -> identical to the unmasked model
    plain = WildRayZerModel(tiny_cfg().model)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        a = model(x, 2, motion_probs=torch.zeros_like(probs))["scene_tokens"]
        b = plain(x, 2)["scene_tokens"]
    torch.testing.assert_close(a, b)


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = WildRayZerModel(tiny_cfg().model)
    b = WildRayZerModel(tiny_cfg("model.activation_checkpointing=true").model)
    b.load_state_dict(a.state_dict())
    assert b.scene.transformer.activation_checkpointing
    x = images()
    for m in (a, b):
        m(x, 2)["renders"].mean().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, atol=1e-6, rtol=1e-5, msg=n)


def test_bf16_autocast_keeps_camera_maths_in_fp32():
    torch.manual_seed(0)
    model = WildRayZerModel(tiny_cfg().model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(), 2)
    assert out["cameras"]["c2w"].dtype == torch.float32 and out["renders"].dtype == torch.float32
    assert torch.isfinite(out["renders"]).all()
    out["renders"].mean().backward()
    assert model.camera.pose_head[-1].weight.grad is not None
    assert model(images(), 2, render_targets=False)["renders"] is None


def test_motion_on_all_views_and_mae_switch():
    torch.manual_seed(0)
    model = WildRayZerModel(tiny_cfg("model.use_motion_mask=true", "model.use_mae_masking=true").model, semantic_dim=0)
    x = images()
    out = model(x, 2, motion_all_views=True)
    assert out["motion_logits"].shape == (2, 5, 1, 32, 32) and out["token_mask"].shape == (2, 2, 16)
    ctx = model(x, 2)
    assert ctx["motion_logits"].shape == (2, 2, 1, 32, 32)
    off = model(x, 2, apply_mae=False, motion_probs=torch.ones(2, 2, 1, 32, 32))
    assert off["token_mask"] is None


def test_pose_head_reads_canonical_then_view_token_and_view_0_stays_identity():
    torch.manual_seed(0)
    model = WildRayZerModel(tiny_cfg().model)
    x = images()
    c2w = cameras(model, x)["c2w"]
    torch.testing.assert_close(c2w, torch.eye(4).expand_as(c2w))  # zero-initialised last layer
    head = model.camera.pose_head
    d = model.camera.cam_token.shape[-1]
    assert head[0].in_features == 2 * d
    with torch.no_grad():  # a head that only reads the first half of its input: the canonical (view 0) token
        head[0].weight[:, d:] = 0
        torch.nn.init.normal_(head[-1].weight, std=0.5)
    c2w = cameras(model, x)["c2w"]
    assert torch.equal(c2w[:, 0], torch.eye(4).expand(2, 4, 4))  # view 0 is the identity, whatever the head says
    assert not torch.allclose(c2w[:, 1], torch.eye(4).expand(2, 4, 4), atol=1e-3)
    torch.testing.assert_close(c2w[:, 1], c2w[:, 4])  # same canonical token -> same pose for every other view


def test_camera_images_feed_the_camera_estimator_and_nothing_else():
    torch.manual_seed(0)
    model = WildRayZerModel(tiny_cfg().model).eval()
    x, other = images(), images(seed=1)
    with torch.no_grad():
        for p in model.camera.parameters():  # off the identity init, so that cameras depend on the views
            p.add_(0.05 * torch.randn_like(p))
        plain = model(x, 2)
        same = model(x, 2, camera_images=x)
        mixed = model(x, 2, camera_images=other)
        swapped = model(other, 2)
    assert torch.equal(plain["renders"], same["renders"])
    # the cameras are those the estimator reads off camera_images ...
    assert torch.allclose(mixed["cameras"]["c2w"], swapped["cameras"]["c2w"], atol=1e-6)
    assert not torch.allclose(mixed["cameras"]["c2w"], plain["cameras"]["c2w"], atol=1e-4)
    # ... and the rest is made of images: x's views placed at those cameras
    model._cameras = lambda tokens, given, views: swapped["cameras"]
    with torch.no_grad():
        placed = model(x, 2)
    for key in ("scene_tokens", "renders"):
        assert torch.allclose(mixed[key], placed[key], atol=1e-6), key
    assert (mixed["scene_tokens"] - swapped["scene_tokens"]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="camera_images"):
        model(x, 2, camera_images=x[:, :3])
