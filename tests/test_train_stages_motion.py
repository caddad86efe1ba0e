"""Stages 2 and 3 end to end on a small synthetic set, and the README flag matrix."""

import itertools

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from wildrayzer.config import load_config
from wildrayzer.data import build_dataset
from wildrayzer.data.synthetic import SynthParams, generate
from wildrayzer.errors import ConfigError
from wildrayzer.model import WildRayZerModel
from wildrayzer.train.loop import train
from wildrayzer.train.stages import apply_trainable, get_stage
from wildrayzer.weights import latest_checkpoint

TINY = ["model.image_size=32", "model.patch_size=8", "model.dim=64", "model.heads=2", "model.camera_layers=1",
        "model.scene_layers=1", "model.renderer_layers=1", "model.motion_layers=2", "model.num_latents=16",
        "model.motion_heads=2", "semantic.feature_size=4", "training.batch_size=2", "training.lr_warmup=1",
        "training.checkpoint_every=100", "logging.progress=false", "logging.tensorboard=false",
        "training.psnr_filter_threshold=0"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    torch.set_num_threads(1)
    r = tmp_path_factory.mktemp("synth")
    generate(r, SynthParams(static_train=2, static_test=1, dynamic_train=2, dynamic_test=1, frames=12, res=32,
                            coco_images=4), progress=False)
    return r


def stage_cfg(root, tmp, stage: int, extra=()):
    names = {1: "wildrayzer_stage1_pretrain", 2: "wildrayzer_stage2_motion_mask",
             3: "wildrayzer_stage3_joint_copy_paste"}
    data = "re10k_processed_v2" if stage == 1 else "dynamic_re10k"
    return load_config(f"configs/tiny/{names[stage]}.yaml", [
        *TINY, f"data.root={root / data}", f"training.output_dir={tmp}", f"training.run_name=s{stage}",
        "training.max_steps=2", f"copy_paste.image_dir={root / 'coco/images'}",
        f"copy_paste.annotation_file={root / 'coco/annotations/instances_synthetic.json'}",
        *([f"training.init_from={tmp / f's{stage - 1}'}"] if stage > 1 else []), *extra])


def weights(run_dir):
    return load_file(str(latest_checkpoint(run_dir)))


def test_stages_1_2_3_train_and_freeze_the_right_parts(root, tmp_path):
    train(stage_cfg(root, tmp_path, 1))
    s1 = weights(tmp_path / "s1")
    train(stage_cfg(root, tmp_path, 2))
    s2 = weights(tmp_path / "s2")
    frozen = [k for k in s2 if not k.startswith("motion.")]
    assert frozen and all(torch.equal(s2[k], s1[k]) for k in frozen), "stage 2 changed a frozen parameter"
    motion = [k for k in s2 if k.startswith("motion.")]
    assert motion and "noise_token" in s2
    # every motion parameter has moved away from its fresh init after two AdamW steps: compare to a fresh model
    fresh = WildRayZerModel(stage_cfg(root, tmp_path, 2).model, semantic_dim=get_stage(2).semantic_dim(
        stage_cfg(root, tmp_path, 2))).state_dict()
    moved = [k for k in motion if not torch.equal(s2[k], fresh[k]) and s2[k].dtype.is_floating_point]
    assert len(moved) > 0.9 * len(motion)
    # An estimator that flags every pixel (output bias +10) and threshold 0: every context token is masked, so the
    # noise token is used in stage 3 and must train. (Two stage-2 steps leave every probability below 0.5.)
    s2_path = latest_checkpoint(tmp_path / "s2")
    with safe_open(str(s2_path), "pt") as f:
        meta = f.metadata()
    flagged = dict(s2, **{"motion.decoder.head.2.bias": torch.full_like(s2["motion.decoder.head.2.bias"], 10.0)})
    save_file(flagged, str(s2_path), metadata=meta)
    # the paper's joint stage 3 (the tiny config holds camera and motion frozen; see the next run)
    train(stage_cfg(root, tmp_path, 3, ["model.mask_token_threshold=0.0", "training.freeze_parts=[]"]))
    s3 = weights(tmp_path / "s3")
    for part in ("tokenizer.", "camera.", "scene.", "renderer.", "motion."):
        keys = [k for k in s3 if k.startswith(part) and s3[k].dtype.is_floating_point]
        assert any(not torch.equal(s3[k], s2[k]) for k in keys), f"stage 3 did not train {part}"
    assert not torch.equal(s3["noise_token"], s2["noise_token"])
    # the tiny config's training.freeze_parts=[tokenizer, camera, motion] holds them bit-identical through stage 3
    cfg3 = stage_cfg(root, tmp_path, 3, ["model.mask_token_threshold=0.0", "training.run_name=s3f"])
    assert list(cfg3.training.freeze_parts) == ["tokenizer", "camera", "motion"]
    train(cfg3)
    s3f = weights(tmp_path / "s3f")
    held = [k for k in s3f if k.startswith(("tokenizer.", "camera.", "motion."))]
    assert held and all(torch.equal(s3f[k], flagged[k]) for k in held), "a frozen part's parameter changed"
    for part in ("scene.", "renderer."):
        assert any(not torch.equal(s3f[k], s2[k]) for k in s3f if k.startswith(part)), f"stage 3 froze {part}"
    assert not torch.equal(s3f["noise_token"], s2["noise_token"])


@pytest.mark.parametrize("stage", [2, 3])
def test_trainable_sets(root, tmp_path, stage):
    cfg = stage_cfg(root, tmp_path, stage)
    model = WildRayZerModel(cfg.model, semantic_dim=8)
    names = apply_trainable(model, stage)
    assert names == (["motion"] if stage == 2 else ["tokenizer", "camera", "scene", "renderer", "motion",
                                                     "noise_token"])
    grads = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(tuple(names)) for n in grads)


def test_freeze_parts_validation(root, tmp_path):
    with pytest.raises(ConfigError, match="unknown part 'camra'.*did you mean 'camera'"):
        stage_cfg(root, tmp_path, 3, ["training.freeze_parts=[camra]"])
    cfg = stage_cfg(root, tmp_path, 2, ["training.freeze_parts=[motion]"])
    with pytest.raises(ConfigError, match="leaves nothing to train in stage 2"):
        apply_trainable(WildRayZerModel(cfg.model, semantic_dim=8), 2, cfg.training.freeze_parts)
    cfg = stage_cfg(root, tmp_path, 3, ["training.freeze_parts=[camera,noise_token]"])
    model = WildRayZerModel(cfg.model, semantic_dim=8)
    assert apply_trainable(model, 3, cfg.training.freeze_parts) == ["tokenizer", "scene", "renderer", "motion"]
    assert not any(p.requires_grad for p in model.camera.parameters()) and not model.noise_token.requires_grad


FLAGS = list(itertools.product([False, True], repeat=4))


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("motion,pseudo,mae,paste", FLAGS)
def test_flag_matrix(root, tmp_path, stage, motion, pseudo, mae, paste):
    """Every README flag alone and combined: either a finite, non-zero mask loss, or a clear config error."""
    cfg = stage_cfg(root, tmp_path, stage, [f"model.use_motion_mask={motion}",
                                           f"model.use_dinov3_pseudolabel={pseudo}", f"model.use_mae_masking={mae}",
                                           f"copy_paste.enabled={paste}", "copy_paste.probability=1.0",
                                           "training.init_from="])
    st = get_stage(stage)
    if not motion or not (pseudo or paste) or (stage == 3 and pseudo):
        # stage 3 pseudo-labels need a static model to render from (init_from / stage1_checkpoint, empty here)
        with pytest.raises(ConfigError, match="use_motion_mask|no supervision|static model"):
            WildRayZerModel(cfg.model, semantic_dim=st.semantic_dim(cfg))
            st.setup(cfg, torch.device("cpu"), lambda m: None)
        return
    model = WildRayZerModel(cfg.model, semantic_dim=st.semantic_dim(cfg))
    apply_trainable(model, stage)
    st.setup(cfg, torch.device("cpu"), lambda m: None)
    ds = build_dataset(cfg, "train")
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ("images", "fxfycxcy", "c2w", "frame_idx")}
    out = st.forward(model, batch, cfg)
    loss, logs = st.compute_losses(batch, out, cfg)
    assert torch.isfinite(loss) and loss > 0
    assert logs["mask_bce"] > 0 and logs["mask_valid_frac"] > 0, "mask supervision silently vanished"
    loss.backward()
    assert all(p.grad is not None for p in model.motion.parameters())
    if stage == 3 and mae:
        assert out["token_mask"] is not None


def test_stage3_pseudolabels_with_static_model(root, tmp_path):
    """Stage 3 with pseudo-labels and copy-paste: the rendering loss excludes dynamic pixels."""
    train(stage_cfg(root, tmp_path, 1))
    train(stage_cfg(root, tmp_path, 2))
    cfg = stage_cfg(root, tmp_path, 3, ["copy_paste.probability=1.0"])
    st = get_stage(3)
    model = WildRayZerModel(cfg.model, semantic_dim=st.semantic_dim(cfg))
    st.setup(cfg, torch.device("cpu"), lambda m: None)
    assert st.static_model is not None and not any(p.requires_grad for p in st.static_model.parameters())
    ds = build_dataset(cfg, "train")
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ("images", "fxfycxcy", "c2w", "frame_idx")}
    out = st.forward(model, batch, cfg)
    _, logs = st.compute_losses(batch, out, cfg)
    assert out["paste_masks"].sum() > 0 and logs["dynamic_frac"] > 0
    assert not torch.equal(out["pasted_images"], batch["images"])


def test_stages_2_and_3_train_with_static_scenes_mixed_in(root, tmp_path, monkeypatch):
    """data.static_root: both motion stages run on batches mixing dynamic and static scenes, and the static ones
    reach the labels flagged as such."""
    from wildrayzer.train.stage2 import MotionStageBase

    seen = []
    labels = MotionStageBase.labels

    def record(self, static_renders, batch, cfg, feats=None):
        seen.extend(batch["static_scene"].tolist())
        return labels(self, static_renders, batch, cfg, feats)

    monkeypatch.setattr(MotionStageBase, "labels", record)
    mix = [f"data.static_root={root / 're10k_processed_v2'}", "data.static_fraction=0.5"]
    train(stage_cfg(root, tmp_path, 1))
    for stage in (2, 3):
        seen.clear()
        train(stage_cfg(root, tmp_path, stage, mix))
        assert len(seen) == 4 and sorted(seen) == [False, False, True, True], (stage, seen)
        assert latest_checkpoint(tmp_path / f"s{stage}") is not None


@pytest.mark.parametrize("motion", ["jump", "glide"])
def test_stage1_camera_paste_pastes_into_the_camera_views_only(root, tmp_path, monkeypatch, motion):
    seen = []
    forward = WildRayZerModel.forward

    def spy(self, images, num_context, **kw):
        seen.append((images.detach().clone(), kw.get("camera_images")))
        return forward(self, images, num_context, **kw)

    monkeypatch.setattr(WildRayZerModel, "forward", spy)
    train(stage_cfg(root, tmp_path, 1, ["training.camera_paste=true", "copy_paste.probability=1.0",
                                        f"copy_paste.motion={motion}"]))
    assert len(seen) == 2
    for images, camera_images in seen:
        assert camera_images is not None and camera_images.shape == images.shape
        changed = (camera_images != images).any(dim=2)  # (B, V, H, W): pixels under a pasted cut-out
        assert changed.flatten(2).any(dim=2).all(), "every view of every sample gets a cut-out"
        assert changed.float().mean() < 0.9  # cut-outs, not whole new images


@pytest.mark.parametrize("extra, why", [(["training.stage=2"], "stage"), (["model.cameras=given"], "given")])
def test_camera_paste_needs_a_stage1_model_that_predicts_cameras(root, tmp_path, extra, why):
    with pytest.raises(ConfigError, match=f"camera_paste.*{why}"):
        stage_cfg(root, tmp_path, 1, ["training.camera_paste=true", *extra])


def test_a_posed_labeller_renders_the_labels_with_the_datasets_cameras(root, tmp_path, monkeypatch):
    """pseudolabel.stage1_checkpoint naming a posed model (model.cameras=given): stages 2 and 3 of a model that
    predicts its cameras are labelled by that frozen model's renders, which get the batch's cameras; stage 2 no
    longer labels with its own renders. A labeller of other views is refused at setup."""
    train(stage_cfg(root, tmp_path, 1, ["model.cameras=given", "training.run_name=posed"]))
    train(stage_cfg(root, tmp_path, 1))
    calls = []
    forward = WildRayZerModel.forward

    def spy(self, images, num_context, **kw):
        calls.append((self.camera is None, kw.get("cameras")))
        return forward(self, images, num_context, **kw)

    monkeypatch.setattr(WildRayZerModel, "forward", spy)
    labeller = [f"pseudolabel.stage1_checkpoint={tmp_path / 'posed'}"]
    for stage in (2, 3):
        calls.clear()
        train(stage_cfg(root, tmp_path, stage, labeller))
        posed = [cams for is_posed, cams in calls if is_posed]
        assert len(posed) == 2, (stage, len(calls))  # one labelling render per step, by the posed model
        assert all(cams is not None and cams["c2w"].shape[-2:] == (4, 4) for cams in posed)
        assert all(cams is None for is_posed, cams in calls if not is_posed)  # the trained model predicts
        assert latest_checkpoint(tmp_path / f"s{stage}") is not None
    s2, s1 = weights(tmp_path / "s2"), weights(tmp_path / "s1")
    assert all(torch.equal(s2[k], s1[k]) for k in s1)  # the trained model's static parts stay frozen in stage 2
    other = stage_cfg(root, tmp_path, 2, [*labeller, "model.num_target_views=3"])
    with pytest.raises(ConfigError, match="num_target_views=6, this run has 3.*same views"):
        get_stage(2).setup(other, torch.device("cpu"), lambda m: None)
