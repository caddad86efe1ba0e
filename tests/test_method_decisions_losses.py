"""Method decisions, losses and their masks (docs/METHOD_DECISIONS.md): stage 3's rendering loss counts static pixels
only (pseudo-mask of reliable targets U exact paste mask), masked means, BCE over valid samples, the loss weights;
and what the stages feed the pseudo-labeller (static renders of the un-pasted context from the frozen, unmasked
static model) and the motion head (labels, validity). Each test fails when the decision it names is flipped."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_run import MICRO_MODEL
from torch import nn

import wildrayzer.pseudolabel.constructor
from wildrayzer.config import load_config
from wildrayzer.errors import ConfigError
from wildrayzer.model import WildRayZerModel
from wildrayzer.train.losses import mask_bce_loss, mse_loss, rendering_loss
from wildrayzer.train.perceptual import PerceptualLoss
from wildrayzer.train.stages import get_stage

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [*MICRO_MODEL, "model.use_motion_mask=true", "model.use_mae_masking=true",
        "model.use_dinov3_pseudolabel=true", "copy_paste.enabled=false", "training.perceptual_weight=0"]


# ------------------------------------------------------------------ stage-3 rendering loss


def _stage3_out(vc=2, t=2, h=8):
    """A hand-made stage-3 prediction: renders off everywhere; target 0 reliable, pseudo-moving on its left half;
    target 1 unreliable, pseudo-moving on its top half, an object pasted on its bottom-right quadrant."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, vc + t, 3, h, h, generator=gen)
    labels = torch.zeros(1, vc + t, 1, h, h)
    labels[0, vc, :, :, : h // 2] = 1.0
    labels[0, vc + 1, :, : h // 2] = 1.0
    paste = torch.zeros(1, vc + t, 1, h, h)
    paste[0, vc + 1, :, h // 2:, h // 2:] = 1.0
    labels = torch.maximum(labels, paste)
    valid = torch.tensor([[False, False, True, False]])
    renders = (images[:, vc:] + 0.1).clamp(0, 1).requires_grad_(True)
    logits = torch.zeros(1, vc + t, 1, h, h, requires_grad=True)
    return {"renders": renders, "pasted_images": images, "mask_labels": labels, "mask_valid": valid,
            "paste_masks": paste, "motion_logits": logits}


def _stage3_loss(out, mask_weight=1.0):
    st = get_stage(3)
    st.mask_weight = mask_weight
    cfg = load_config(None, ["model.num_context_views=2", "model.num_target_views=2", "training.perceptual_weight=0"])
    return st.compute_losses({}, out, cfg)


def test_stage3_rendering_loss_has_no_gradient_on_moving_pixels():
    out = _stage3_out()
    loss, _ = _stage3_loss(out)
    loss.backward()
    g = out["renders"].grad[0, 0].abs().sum(0)  # target 0, reliable
    assert (g[:, :4] == 0).all(), "moving pixels (pseudo-mask) must not be rendered towards"
    assert (g[:, 4:] > 0).all(), "static pixels must be"


def test_unreliable_pseudo_masks_exclude_nothing_but_pasted_pixels():
    """A target whose pseudo-mask failed the PSNR filter is rendered everywhere except where an object was pasted
    (known exactly)."""
    out = _stage3_out()
    loss, _ = _stage3_loss(out)
    loss.backward()
    g = out["renders"].grad[0, 1].abs().sum(0)  # target 1, unreliable
    assert (g[4:, 4:] == 0).all(), "pasted pixels are always excluded"
    assert (g[:4] > 0).all(), "an unreliable pseudo-mask must not exclude pixels"
    assert (g[4:, :4] > 0).all()


def test_stage3_loss_is_render_plus_weighted_bce():
    out = _stage3_out()
    loss, logs = _stage3_loss(out, mask_weight=0.25)
    bce, _ = mask_bce_loss(out["motion_logits"], out["mask_labels"], out["mask_valid"])
    assert loss.item() == pytest.approx(logs["render_loss"].item() + 0.25 * bce.item(), rel=1e-6)
    loss.backward()
    assert out["motion_logits"].grad.abs().sum() > 0


def test_stage2_loss_is_the_weighted_bce():
    out = _stage3_out()
    st = get_stage(2)
    st.mask_weight = 0.25
    loss, _ = st.compute_losses({}, out, None)
    bce, _ = mask_bce_loss(out["motion_logits"], out["mask_labels"], out["mask_valid"])
    assert loss.item() == pytest.approx(0.25 * bce.item(), rel=1e-6)


# ------------------------------------------------------------------ loss definitions


def test_masked_mse_is_the_mean_over_counted_pixels():
    pred, target = torch.zeros(1, 1, 3, 4, 4), torch.zeros(1, 1, 3, 4, 4)
    target[..., 0, 0] = 1.0  # one wrong pixel
    w = torch.zeros(1, 1, 1, 4, 4)
    w[..., 0, :2] = 1.0  # two counted pixels, one of them wrong
    assert mse_loss(pred, target, w).item() == pytest.approx(0.5)
    w[..., 3, :] = 1.0  # four more counted, all right: the mean drops to 1/6, whatever is left out
    assert mse_loss(pred, target, w).item() == pytest.approx(1 / 6)


def test_bce_counts_valid_samples_only():
    """A sample marked invalid (failed PSNR filter) contributes no BCE: zero gradient on its logits; the loss is the
    mean over valid samples."""
    logits = torch.zeros(1, 3, 1, 4, 4, requires_grad=True)
    target = torch.zeros(1, 3, 1, 4, 4)
    target[0, 1] = 1.0
    valid = torch.tensor([[True, False, True]])
    loss, _ = mask_bce_loss(logits, target, valid)
    loss.backward()
    assert logits.grad[0, 1].abs().sum() == 0 and logits.grad[0, 0].abs().sum() > 0
    assert loss.item() == pytest.approx(float(torch.log(torch.tensor(2.0))), rel=1e-6)
    alone, _ = mask_bce_loss(logits[:, :1], target[:, :1])
    assert loss.item() == pytest.approx(alone.item(), rel=1e-6)


def test_bce_pos_weight_upweights_moving_pixels():
    logits = torch.zeros(1, 1, 1, 4, 4)
    target = torch.zeros(1, 1, 1, 4, 4)
    target[..., :1, :] = 1.0  # a quarter of the pixels move
    plain, _ = mask_bce_loss(logits, target)
    weighted, _ = mask_bce_loss(logits, target, pos_weight=3.0)
    # at logit 0 every pixel costs log 2; moving ones count 3x: (12 + 4 * 3) / 16 = 1.5x
    assert weighted.item() == pytest.approx(1.5 * plain.item(), rel=1e-6)


def test_perceptual_term_is_masked_too():
    torch.manual_seed(0)
    vgg = PerceptualLoss()  # random weights: only the masking matters here
    pred, target = torch.rand(1, 1, 3, 32, 32), torch.rand(1, 1, 3, 32, 32)
    _, logs = rendering_loss(pred, target, perceptual=vgg, perceptual_weight=0.2,
                             weight=torch.zeros(1, 1, 1, 32, 32))
    assert logs["perceptual"].item() == 0.0
    _, logs = rendering_loss(pred, target, perceptual=vgg, perceptual_weight=0.2)
    assert logs["perceptual"].item() > 0


# ------------------------------------------------------------------ what the stages feed the pseudo-labeller


class StubSemantic(nn.Module):
    """A frozen stand-in backbone: unit-norm colour + brightness features on a 4x4 grid."""

    out_dim = 4

    def forward(self, x):
        f = F.adaptive_avg_pool2d(x.float(), 4)
        return F.normalize(torch.cat([f, f.mean(1, keepdim=True) - 0.5], dim=1), dim=1)


def flagging(seed) -> WildRayZerModel:
    """A tiny model whose motion head flags every pixel as moving (every context token gets masked); the scene
    encoder's attention and the renderer's head are scaled up so that renders depend visibly on the scene tokens."""
    torch.manual_seed(seed)
    m = WildRayZerModel(load_config(None, TINY).model, semantic_dim=StubSemantic.out_dim).eval()
    with torch.no_grad():
        m.motion.decoder.head[-1].bias.fill_(10.0)
        m.renderer.head.weight.mul_(10.0)
        for blk in m.scene.transformer.blocks:
            blk.attn.qkv.weight.mul_(10.0)
            blk.attn.proj.weight.mul_(10.0)
    return m


def fake_paster(images, rng=None, frame_idx=None):
    """Pastes a white square on every view; -> (images, paste masks)."""
    out, mask = images.clone(), torch.zeros(images.shape[0], 1, *images.shape[-2:])
    out[..., 4:12, 4:12] = 1.0
    mask[..., 4:12, 4:12] = 1.0
    return out, mask


@pytest.fixture
def recorded(monkeypatch):
    """Replaces the pseudo-labeller: records the static renders it is given, labels nothing, all reliable."""
    calls = []

    def fake(renders, targets, backbone, cfg, seed=0, target_feats=None):
        calls.append(renders.detach().clone())
        return torch.zeros_like(targets[:, :, :1]), torch.ones(targets.shape[:2], dtype=torch.bool)

    monkeypatch.setattr(wildrayzer.pseudolabel.constructor, "pseudo_masks_for_batch", fake)
    return calls


def _static_render(model, x, st):
    with torch.no_grad():
        return model(x, 2, semantic_feats=st.features(x[:, :2]), apply_mae=False)["renders"]


@pytest.mark.parametrize("paste", [False, True])
def test_stage3_pseudo_labels_come_from_the_frozen_static_model_unmasked_and_unpasted(recorded, paste):
    cfg = load_config(None, TINY + ["training.stage=3"])
    model, static, sem = flagging(0), flagging(1), StubSemantic()
    st = get_stage(3)
    st.semantic, st.static_model, st.paster = sem, static, fake_paster if paste else None
    x = torch.rand(1, 5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    out = st.forward(model, {"images": x}, cfg)
    (renders,) = recorded
    torch.testing.assert_close(renders, _static_render(static, x, st))
    assert not torch.allclose(renders, _static_render(model, x, st), atol=1e-4)  # not the model in training
    with torch.no_grad():
        masked = static(x, 2, semantic_feats=st.features(x[:, :2]))["renders"]
    assert not torch.allclose(renders, masked, atol=1e-4)  # the static model's own MAE masking is off
    # the model in training masks its moving context tokens with the noise token, as at inference
    assert out["token_mask"] is not None and out["token_mask"].all()
    assert (out["paste_masks"] is not None) == paste
    # ... and sees the pasted images (with their features): the transients it must learn to mask
    seen = out["pasted_images"]
    assert paste != torch.equal(seen, x)
    with torch.no_grad():
        want = model(seen, 2, semantic_feats=st.features(seen), motion_all_views=True)["motion_logits"]
    torch.testing.assert_close(out["motion_logits"], want)


@pytest.mark.parametrize("paste", [False, True])
def test_stage2_pseudo_labels_come_from_unmasked_renders_of_the_unpasted_context(recorded, paste):
    cfg = load_config(None, TINY + ["training.stage=2"])
    model, sem = flagging(0), StubSemantic()
    st = get_stage(2)
    st.semantic, st.paster = sem, fake_paster if paste else None
    x = torch.rand(1, 5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    out = st.forward(model, {"images": x}, cfg)
    (renders,) = recorded
    torch.testing.assert_close(renders, _static_render(model, x, st))
    assert out["token_mask"] is None  # stage 2 trains the mask head against the static scene: no token masking
    seen = fake_paster(x[0])[0][None] if paste else x  # the mask head sees the pasted images and their features
    with torch.no_grad():
        want = model(seen, 2, semantic_feats=st.features(seen), motion_all_views=True, apply_mae=False)
    torch.testing.assert_close(out["motion_logits"], want["motion_logits"])


def _with_labeller(stage, overrides, paste=False):
    """-> (config, stage, model in training, labeller, images): stage 2 labels with the model in training, stage 3 with
    a frozen static model of its own; both models flag every pixel as moving."""
    cfg = load_config(None, TINY + [f"training.stage={stage}", *overrides])
    model = flagging(0)
    st = get_stage(stage)
    st.semantic, st.paster = StubSemantic(), fake_paster if paste else None
    labeller = model
    if stage == 3:
        st.static_model = labeller = flagging(1)
    return cfg, st, model, labeller, torch.rand(1, 5, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("paste", [False, True])
def test_second_labelling_round_masks_the_labellers_moving_context_tokens(recorded, stage, paste):
    """pseudolabel.mask_context: the static render behind the labels masks the context tokens the labeller's own
    motion head flags (stage 2: the model in training; stage 3: the frozen static model), still from the un-pasted
    context; stage 2's head in training still sees the pasted views without token masking."""
    cfg, st, model, labeller, x = _with_labeller(stage, ["pseudolabel.mask_context=true"], paste)
    out = st.forward(model, {"images": x}, cfg)
    (renders,) = recorded
    with torch.no_grad():
        want = labeller(x, 2, semantic_feats=st.features(x[:, :2]), apply_mae=True)
    assert want["token_mask"].all()  # the flagging head masks every context token
    torch.testing.assert_close(renders, want["renders"])
    assert not torch.allclose(renders, _static_render(labeller, x, st), atol=1e-4)
    if stage == 2:
        assert out["token_mask"] is None
        seen = fake_paster(x[0])[0][None] if paste else x
        with torch.no_grad():
            head = model(seen, 2, semantic_feats=st.features(seen), motion_all_views=True, apply_mae=False)
        torch.testing.assert_close(out["motion_logits"], head["motion_logits"])


@pytest.mark.parametrize("stage", [2, 3])
def test_the_labellers_own_token_threshold_applies_to_its_render_alone(recorded, stage):
    """pseudolabel.mask_token_threshold replaces the labeller's model.mask_token_threshold in its masked render only:
    above every pooled probability (1.0) the labeller masks nothing, while the model in training keeps its own."""
    cfg, st, model, labeller, x = _with_labeller(stage, ["pseudolabel.mask_context=true",
                                                         "pseudolabel.mask_token_threshold=1.0"])
    out = st.forward(model, {"images": x}, cfg)
    (renders,) = recorded
    torch.testing.assert_close(renders, _static_render(labeller, x, st))
    assert labeller.mask_token_threshold == cfg.model.mask_token_threshold < 1.0
    if stage == 3:  # the model in training masks its flagged context tokens at its own threshold
        assert out["token_mask"].all()


@pytest.mark.parametrize("stage", [2, 3])
def test_the_farthest_labeller_renders_each_view_from_the_views_farthest_in_time_and_labels_every_view(recorded,
                                                                                                      stage):
    """pseudolabel.render_from=farthest: the labeller (stage 2's model, stage 3's frozen static model) renders every
    view, context ones too, from the two other views farthest from it in frame number, and every view is labelled
    (the fake labeller marks all reliable); a batch without frame numbers is refused."""
    cfg, st, model, labeller, x = _with_labeller(stage, ["pseudolabel.render_from=farthest"])
    out = st.forward(model, {"images": x, "frame_idx": torch.tensor([[0, 4, 1, 2, 3]])}, cfg)
    (renders,) = recorded
    assert renders.shape == x.shape
    # frame 0 <- frames 4 and 3 (views 1, 4); frames 4 and 3 <- frames 0 and 1 (views 0, 2)
    for view, ctx in ((0, [1, 4]), (1, [0, 2]), (4, [0, 2])):
        order = ctx + [i for i in range(5) if i not in ctx]
        want = _static_render(labeller, x[:, order], st)[:, order.index(view) - 2]
        torch.testing.assert_close(renders[:, view], want)
    assert out["mask_valid"].all()
    with pytest.raises(ConfigError, match="frame_idx"):
        st.forward(model, {"images": x}, cfg)


def test_labels_join_paste_masks_and_only_reliable_or_pasted_views_are_supervised(monkeypatch):
    """Targets get pseudo-masks U paste masks, valid when reliable or pasted; context views (whose own transients a
    render reproduces) are not supervised, pasted or not; with copy-paste alone every view counts."""
    def fake(renders, targets, backbone, cfg, seed=0, target_feats=None):
        masks = torch.zeros_like(targets[:, :, :1])
        masks[..., :2, :] = 1.0
        return masks, torch.tensor([[True, False, False]])

    monkeypatch.setattr(wildrayzer.pseudolabel.constructor, "pseudo_masks_for_batch", fake)
    cfg = load_config(None, TINY)
    st = get_stage(2)
    x = torch.rand(1, 5, 3, 8, 8)
    paste = torch.zeros(1, 5, 1, 8, 8)
    paste[0, 0, :, 6:, 6:] = 1.0  # on context view 0
    paste[0, 3, :, 6:, 6:] = 1.0  # on target 1 (unreliable)
    labels, valid = st.labels(torch.zeros(1, 3, 3, 8, 8), {"images": x}, cfg)
    assert valid.tolist() == [[False, False, True, False, False]] and labels[:, :2].sum() == 0
    labels, valid = st.labels(torch.zeros(1, 3, 3, 8, 8), {"images": x, "paste_masks": paste}, cfg)
    assert valid.tolist() == [[False, False, True, True, False]]
    assert (labels[0, 3, :, 6:, 6:] == 1).all() and (labels[0, 3, :, :2] == 1).all()
    cfg = load_config(None, TINY + ["model.use_dinov3_pseudolabel=false", "copy_paste.enabled=true"])
    labels, valid = st.labels(None, {"images": x, "paste_masks": paste}, cfg)
    assert valid.all() and torch.equal(labels, paste)


def test_scenes_known_to_be_static_are_labelled_static_in_every_view_but_where_pasted(monkeypatch):
    """data.static_root: a static scene's views are all supervised (context ones too) with its paste masks as the
    whole motion: the pseudo-label constructor only sees the scenes that may move (its labels for a scene do not
    depend on the batch: pinned in test_pseudolabel_constructor.py), a batch of static scenes does not call it, and a
    dynamic scene in the same batch keeps its pseudo-labels."""
    seen = []

    def fake(renders, targets, backbone, cfg, seed=0, target_feats=None):
        seen.append(len(targets))
        assert renders.shape == targets.shape
        masks = torch.zeros_like(targets[:, :, :1])
        masks[..., :2, :] = 1.0  # every target "moves" in rows 0-1
        return masks, torch.ones(targets.shape[:2], dtype=torch.bool)

    monkeypatch.setattr(wildrayzer.pseudolabel.constructor, "pseudo_masks_for_batch", fake)
    cfg = load_config(None, TINY)
    st = get_stage(2)
    x = torch.rand(2, 5, 3, 8, 8)
    static = torch.tensor([False, True])
    labels, valid = st.labels(torch.zeros(2, 3, 3, 8, 8), {"images": x, "static_scene": static}, cfg)
    assert valid.tolist() == [[False, False, True, True, True], [True] * 5]
    assert (labels[0, 2:, :, :2] == 1).all() and labels[1].sum() == 0
    paste = torch.zeros(2, 5, 1, 8, 8)
    paste[:, 0, :, 6:, 6:] = 1.0
    labels, valid = st.labels(torch.zeros(2, 3, 3, 8, 8), {"images": x, "static_scene": static, "paste_masks": paste},
                              cfg)
    assert torch.equal(labels[1], paste[1]) and valid[1].all()
    assert (labels[0, 2:, :, :2] == 1).all() and not valid[0, 0]
    assert seen == [1, 1]
    labels, valid = st.labels(torch.zeros(2, 3, 3, 8, 8), {"images": x, "static_scene": torch.tensor([True, True])},
                              cfg)
    assert seen == [1, 1] and valid.all() and labels.sum() == 0
