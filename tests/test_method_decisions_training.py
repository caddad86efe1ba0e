"""Method decisions, training and evaluation (docs/METHOD_DECISIONS.md): which parts each stage trains (frozen parts
get no gradient and keep their values after a step), the frozen static model of stage 3, weight decay, the LR
schedule, checkpoints (noise token saved, strict keys, view counts), resume (RNG, data position), and the metric
definitions (PSNR, static regions, mask IoU / pooled IoU / recall, SSIM). Each test fails when the decision it names
is flipped (``make mutate``)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from tiny_run import MICRO_MODEL

from wildrayzer.config import load_config
from wildrayzer.errors import CheckpointError, ConfigError
from wildrayzer.image_ops import psnr
from wildrayzer.infer.metrics import mask_iou_pooled, mask_scores, psnr_static, ssim_full
from wildrayzer.model import WildRayZerModel
from wildrayzer.semantic import build_semantic_backbone
from wildrayzer.train.optim import build_optimizer, cosine_with_warmup, param_groups
from wildrayzer.train.rng import capture_rng, restore_rng
from wildrayzer.train.sampler import EpochLoader
from wildrayzer.train.stages import apply_trainable, get_stage
from wildrayzer.weights import load_model_checkpoint, load_state_strict, save_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [*MICRO_MODEL, "model.use_motion_mask=true", "model.use_mae_masking=true", "training.lr=0.01",
        "training.weight_decay=0.05"]
PARTS = ("tokenizer", "camera", "scene", "renderer", "motion", "noise_token")


# ------------------------------------------------------------------ stage freezing


def _one_step(stage: int, freeze=()) -> tuple[set[str], set[str]]:
    """One AdamW step of ``stage`` on a loss that touches every part -> (parts that changed, parts with gradients)."""
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    model = WildRayZerModel(cfg.model)
    apply_trainable(model, stage, freeze)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(model, cfg.training)
    x = torch.rand(1, 5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    probs = torch.zeros(1, 2, 1, 32, 32)
    probs[..., :16, :] = 1.0  # half the context tokens are masked: the noise token is used
    out = model(x, 2, motion_probs=probs, motion_all_views=True)
    assert out["token_mask"].any()
    (((out["renders"] - x[:, 2:]) ** 2).mean() + out["motion_logits"].sigmoid().mean()).backward()
    grads = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    opt.step()
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    return changed, grads


@pytest.mark.parametrize("stage,trains", [(1, {"tokenizer", "camera", "scene", "renderer"}), (2, {"motion"}),
                                          (3, set(PARTS))])
def test_each_stage_trains_its_parts_and_frozen_parts_keep_their_values(stage, trains):
    changed, grads = _one_step(stage)
    assert changed == trains and grads == trains


def test_freeze_parts_hold_a_part_through_a_stage3_step():
    changed, grads = _one_step(3, freeze=("camera",))
    assert changed == set(PARTS) - {"camera"} and "camera" not in grads


def test_stage3_static_model_is_frozen_and_comes_from_the_stage1_checkpoint_first(tmp_path):
    """pseudolabel.stage1_checkpoint wins over training.init_from as the source of the static renders, and the
    loaded model never trains."""
    cfg = load_config(None, TINY + ["semantic.backbone=efficientnet_lite0", "semantic.feature_size=4",
                                    "model.use_dinov3_pseudolabel=true", "copy_paste.enabled=false",
                                    "training.perceptual_weight=0", "training.stage=3"])
    st = get_stage(3)
    dim = st.semantic_dim(cfg)
    paths = {}
    for seed, name in ((1, "stage1"), (2, "stage2")):
        torch.manual_seed(seed)
        model = WildRayZerModel(cfg.model, semantic_dim=dim)
        paths[name] = save_pretrained(model, cfg, tmp_path / name, semantic_dim=dim)
    cfg.pseudolabel.stage1_checkpoint = str(paths["stage1"])
    cfg.training.init_from = str(paths["stage2"])
    st.setup(cfg, torch.device("cpu"), lambda _m: None)
    want = load_model_checkpoint(paths["stage1"]).model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in st.static_model.state_dict().items())
    assert not any(p.requires_grad for p in st.static_model.parameters())


def test_second_labelling_round_needs_a_static_model_with_a_motion_head(tmp_path):
    """pseudolabel.mask_context masks the labeller's context tokens with its own motion masks: a stage-1 checkpoint,
    which has no motion head, is refused at setup with a message naming the key."""
    base = TINY + ["semantic.backbone=efficientnet_lite0", "semantic.feature_size=4", "copy_paste.enabled=false",
                   "training.perceptual_weight=0"]
    stage1 = load_config(None, base + ["model.use_motion_mask=false"])
    path = save_pretrained(WildRayZerModel(stage1.model), stage1, tmp_path / "stage1")
    cfg = load_config(None, base + ["model.use_dinov3_pseudolabel=true", "training.stage=3",
                                    "pseudolabel.mask_context=true", f"pseudolabel.stage1_checkpoint={path}"])
    with pytest.raises(ConfigError, match="pseudolabel.mask_context=true needs a static model with a motion head"):
        get_stage(3).setup(cfg, torch.device("cpu"), lambda _m: None)
    cfg.pseudolabel.mask_context = False
    get_stage(3).setup(cfg, torch.device("cpu"), lambda _m: None)


def test_semantic_backbone_stays_frozen_in_eval_mode():
    """The semantic backbone never trains: no parameter requires a gradient, train() cannot switch it to training
    mode, and a forward pass leaves its BatchNorm statistics untouched."""
    backbone = build_semantic_backbone(load_config(None, ["semantic.feature_size=4"]).semantic)
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training and not any(m.training for m in backbone.modules())
    stats = {k: v.clone() for k, v in backbone.state_dict().items() if "running" in k}
    assert stats
    backbone(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in stats.items())


def test_learned_tokens_norms_and_biases_are_not_weight_decayed():
    cfg = load_config(None, TINY)
    model = WildRayZerModel(cfg.model)
    decay, no_decay = (set(map(id, g["params"])) for g in param_groups(model, 0.05))
    names = dict(model.named_parameters())
    for n in ("camera.cam_token", "scene.latents", "noise_token", "scene.fuse.1.bias", "motion.fuse.0.weight"):
        assert id(names[n]) in no_decay, n
    assert id(names["scene.fuse.1.weight"]) in decay


def test_lr_warms_up_linearly_then_decays_by_a_cosine_to_the_floor():
    lr = [cosine_with_warmup(s, warmup=10, total=110, min_ratio=0.1) for s in range(111)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0) and lr[10] == pytest.approx(1.0)
    assert lr[60] == pytest.approx(0.55) and lr[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))


def test_paper_settings_are_the_defaults_and_the_stage_configs():
    """The paper's settings (README keys, pseudo-label constants, the three stage recipes)."""
    d = load_config(None, [])
    assert d.training.psnr_filter_threshold == 17.0 and d.training.mask_distill_loss_weight == 1.0
    assert d.model.mask_token_threshold == 0.1 and d.model.focal_offset == 1.25
    assert (d.pseudolabel.semantic_weight, d.pseudolabel.ssim_weight) == (0.6, 0.4)
    assert (d.pseudolabel.top_cluster_fraction, d.pseudolabel.min_frame_votes) == (0.05, 4)
    assert (d.training.beta1, d.training.beta2, d.training.perceptual_weight) == (0.9, 0.95, 0.2)
    s1, s2, s3 = (load_config(f"configs/wildrayzer_stage{i}.yaml", []) for i in
                  ("1_pretrain", "2_motion_mask", "3_joint_copy_paste"))
    assert [c.training.stage for c in (s1, s2, s3)] == [1, 2, 3]
    assert [c.training.lr for c in (s1, s2, s3)] == [1e-4, 1e-4, 2e-4]
    assert [c.training.max_steps for c in (s1, s2, s3)] == [100_000, 10_000, 20_000]
    assert not s1.model.use_motion_mask and not s1.copy_paste.enabled
    for c in (s2, s3):
        assert c.model.use_motion_mask and c.model.use_dinov3_pseudolabel and c.model.use_mae_masking
    assert not s2.copy_paste.enabled and s3.copy_paste.enabled


# ------------------------------------------------------------------ checkpoints and resume


def test_noise_token_is_saved_and_restored(tmp_path):
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    model = WildRayZerModel(cfg.model)
    with torch.no_grad():
        model.noise_token.copy_(torch.arange(32.0))
    loaded = load_model_checkpoint(save_pretrained(model, cfg, tmp_path / "m")).model
    assert torch.equal(loaded.noise_token, model.noise_token)


def test_a_checkpoint_missing_a_tensor_is_refused(tmp_path):
    cfg = load_config(None, TINY)
    model = WildRayZerModel(cfg.model)
    state = model.state_dict()
    del state["scene.latents"]
    with pytest.raises(CheckpointError, match="missing: scene.latents"):
        load_state_strict(WildRayZerModel(cfg.model), state, "test")


def test_a_checkpoint_for_another_view_count_is_refused(tmp_path):
    """The view-index embeddings tie a checkpoint to its view counts: another count must fail loudly."""
    cfg = load_config(None, TINY + ["model.use_motion_mask=false", "model.use_mae_masking=false"])
    path = save_pretrained(WildRayZerModel(cfg.model), cfg, tmp_path / "m")
    other = load_config(None, TINY + ["model.use_motion_mask=false", "model.use_mae_masking=false",
                                      "model.num_context_views=3"])
    with pytest.raises(CheckpointError, match="num_context_views"):
        load_model_checkpoint(path, expected_cfg=other)


def test_rng_state_round_trips_for_torch_numpy_and_python():
    state = capture_rng()
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    restore_rng(state)
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


class Items(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"i": torch.tensor(i)}


def test_data_order_resumes_mid_epoch_and_across_epochs():
    a = EpochLoader(Items(), 2, rank=0, world_size=1, seed=3, num_workers=0)
    for _ in range(3):
        next(a)
    state = a.state_dict()
    want = [next(a)["i"].tolist() for _ in range(5)]  # runs into the next epoch
    b = EpochLoader(Items(), 2, rank=0, world_size=1, seed=3, num_workers=0)
    b.load_state_dict(state)
    assert [next(b)["i"].tolist() for _ in range(5)] == want


# ------------------------------------------------------------------ metrics


def test_psnr_of_known_images():
    gt = torch.zeros(1, 3, 8, 8)
    assert psnr(gt + 0.1, gt).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(gt + 0.01, gt).item() == pytest.approx(40.0, abs=1e-3)


def test_static_psnr_excludes_moving_pixels():
    gt = torch.zeros(1, 3, 8, 8)
    pred = gt.clone()
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1.0  # the top half moves
    pred[..., :4, :] = 1.0  # all of the error is there
    assert psnr_static(pred, gt, mask).item() > 90  # no error on static pixels (PSNR capped at 100 dB)
    pred[..., 4:, :] = 0.1  # now the static half is off by 0.1
    assert psnr_static(pred, gt, mask).item() == pytest.approx(20.0, abs=1e-4)


def test_mask_iou_precision_recall_definitions():
    pred = torch.zeros(3, 1, 4, 4)
    gt = torch.zeros(3, 1, 4, 4)
    gt[0, :, 0, :] = 1.0  # 4 moving pixels
    pred[0, :, 0, :2] = 1.0  # 2 found
    pred[0, :, 3, :] = 1.0  # 4 false alarms
    s = mask_scores(pred, gt)
    assert s["mask_iou"][0] == pytest.approx(2 / 8) and s["mask_precision"][0] == pytest.approx(2 / 6)
    assert s["mask_recall"][0] == pytest.approx(2 / 4)
    assert s["mask_iou"][1] == 1.0 and s["mask_precision"][1] is None and s["mask_recall"][1] is None


def test_pooled_iou_sums_intersections_and_unions_over_views():
    pred = torch.zeros(3, 1, 4, 4)
    gt = torch.zeros(3, 1, 4, 4)
    gt[0, :, 0, :] = 1.0
    pred[0, :, 0, :2] = 1.0  # view 0: 2 / 4
    gt[1] = pred[1] = 1.0  # view 1: 16 / 16; view 2: empty in both, adds nothing
    assert mask_iou_pooled(pred, gt) == pytest.approx(18 / 20)
    assert mask_iou_pooled(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)) is None


def test_ssim_is_scikit_images_gaussian_ssim():
    gen = torch.Generator().manual_seed(0)
    gt = 0.05 * torch.rand(1, 3, 24, 24, generator=gen)  # low contrast: the constants and the covariance norm matter
    pred = 0.05 * torch.rand(1, 3, 24, 24, generator=gen)
    ref = structural_similarity(pred[0].permute(1, 2, 0).numpy(), gt[0].permute(1, 2, 0).numpy(),
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=True, data_range=1.0,
                                channel_axis=-1)
    assert ssim_full(pred, gt).item() == pytest.approx(ref, abs=1e-6)
