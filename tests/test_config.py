import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from wildrayzer.config import load_config, parse_dotlist, valid_keys
from wildrayzer.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = ["wildrayzer_stage1_pretrain", "wildrayzer_stage2_motion_mask", "wildrayzer_stage3_joint_copy_paste",
             "wildrayzer_inference"]


@pytest.mark.parametrize("name", PUBLISHED)
@pytest.mark.parametrize("scale", ["", "tiny/"])
def test_shipped_configs_load(name, scale):
    cfg = load_config(REPO / "configs" / f"{scale}{name}.yaml")
    assert OmegaConf.is_struct(cfg)
    if scale:
        assert cfg.model.image_size == 64 and cfg.data.root.startswith("data/synthetic/")
    else:
        assert cfg.model.dim == 768 and cfg.model.image_size == 256 and cfg.model.num_latents == 768
        assert (cfg.model.camera_layers, cfg.model.scene_layers, cfg.model.renderer_layers) == (12, 8, 12)


def test_stage_deltas():
    s1, s2, s3 = (load_config(REPO / "configs" / f"{n}.yaml") for n in PUBLISHED[:3])
    assert (s1.training.stage, s2.training.stage, s3.training.stage) == (1, 2, 3)
    assert not s1.model.use_motion_mask and s2.model.use_motion_mask and s3.model.use_mae_masking
    assert not s2.copy_paste.enabled and s3.copy_paste.enabled
    assert s3.training.lr == pytest.approx(2e-4) and s2.training.lr == pytest.approx(1e-4)
    assert s2.training.psnr_filter_threshold == 17.0 and s2.training.mask_distill_loss_weight == 1.0
    inf = load_config(REPO / "configs/wildrayzer_inference.yaml")
    assert inf.inference.model_path == "./checkpoints/wildrayzer_2view.pt"
    assert inf.inference.plucker_vis_stride == 16 and inf.inference.save_plucker_vis is False


def test_dotlist_overrides_win_and_are_typed():
    cfg = load_config(REPO / "configs/tiny/wildrayzer_stage1_pretrain.yaml",
                      ["training.lr=2e-4", "model.use_mae_masking=true", "inference_out_root=out/x"])
    assert cfg.training.lr == pytest.approx(2e-4) and isinstance(cfg.training.lr, float)
    assert cfg.model.use_mae_masking is True and cfg.inference_out_root == "out/x"


def test_unknown_key_names_closest():
    msg = r"unknown config key 'training.lr_warmpu'.*did you mean 'training.lr_warmup'"
    with pytest.raises(ConfigError, match=msg):
        load_config(None, ["training.lr_warmpu=3"])
    with pytest.raises(ConfigError, match=r"'modle'.*did you mean 'model'"):
        load_config(None, ["modle.dim=3"])


def test_unknown_key_in_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("base: %s\ntraining:\n  lr_warmpu: 3\n" % (REPO / "configs/tiny/wildrayzer_stage1_pretrain.yaml"))
    with pytest.raises(ConfigError, match=r"training.lr_warmpu.*c.yaml"):
        load_config(f)


def test_wrong_type_and_bad_values():
    with pytest.raises(ConfigError, match="training.max_steps"):
        load_config(None, ["training.max_steps=lots"])
    with pytest.raises(ConfigError, match="semantic.backbone"):
        load_config(None, ["semantic.backbone=resnet"])
    with pytest.raises(ConfigError, match="patch_size"):
        load_config(None, ["model.image_size=100", "model.patch_size=16"])


def test_base_cycle_and_missing(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("model: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_parse_dotlist_nested():
    assert parse_dotlist(["a.b=1", "a.c=x", "d=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}
    with pytest.raises(ConfigError, match="key=value"):
        parse_dotlist(["training.lr"])


def test_readme_keys_exist():
    keys = set(valid_keys())
    for k in ["model.use_motion_mask", "model.use_dinov3_pseudolabel", "model.use_mae_masking",
              "training.mask_distill_loss_weight", "training.psnr_filter_threshold", "copy_paste.enabled",
              "inference.model_path", "inference_out_root", "inference.save_plucker_vis",
              "inference.plucker_vis_stride", "inference.plucker_vis_include_quiver"]:
        assert k in keys


def test_cli_unknown_key_exit_2_one_line():
    cmd = [sys.executable, str(REPO / "train.py"), "--config", "configs/tiny/wildrayzer_stage1_pretrain.yaml",
           "training.no_such_key=1"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "training.no_such_key" in lines[0] and "Traceback" not in r.stderr


def test_cli_unknown_command():
    r = subprocess.run([sys.executable, "-m", "wildrayzer.cli", "trian"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "did you mean 'train'" in r.stderr
