"""Check before you allocate: configs (files, command line, checkpoint headers) are bounded and validated, and a
checkpoint's tensor index is compared with the model its header describes before anything is built."""

import json
import time

import pytest
import torch
from safetensors.torch import save_file
from tiny_run import TINY_MODEL

from wildrayzer.cli import main as cli
from wildrayzer.config import load_config, to_container
from wildrayzer.errors import CheckpointError, ConfigError
from wildrayzer.weights import FORMAT, MAX_PARAMS_ENV, load_model_checkpoint

TINY = TINY_MODEL


@pytest.mark.parametrize("override,needle", [
    ("training.batch_size=0", "training.batch_size' must lie in"),
    ("training.lr=nan", "training.lr' must be a finite number"),
    ("training.lr=-1e-4", "training.lr' must lie in"),
    ("model.heads=0", "model.heads' must lie in"),
    ("model.patch_size=-8", "model.patch_size' must lie in"),
    ("model.dim=1000000", "model.dim' must lie in"),
    ("model.camera_layers=100000", "model.camera_layers' must lie in"),
    ("data.num_workers=-1", "data.num_workers' must lie in"),
    ("training.seed=-5", "training.seed' must lie in"),
    ("training.checkpoint_every=0", "training.checkpoint_every' must lie in"),
    ("training.max_steps=0", "training.max_steps' must lie in"),
    ("training.beta2=inf", "training.beta2' must be a finite number"),
])
def test_command_line_values_are_bounded(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(None, [override])


def test_cli_reports_a_bad_value_in_one_line(capsys):
    assert cli(["train", "--config", "configs/tiny/wildrayzer_stage1_pretrain.yaml", "training.batch_size=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training.batch_size" in err


def _forged(tmp_path, model_overrides: dict, tensors: dict | None = None, semantic_dim: str = "0"):
    """A tiny safetensors file whose header claims the config of a (possibly huge) model."""
    cfg = to_container(load_config(None, TINY))
    cfg["model"].update(model_overrides)
    path = tmp_path / "forged.safetensors"
    save_file(tensors or {"noise_token": torch.zeros(4)}, str(path),
              metadata={"format": FORMAT, "config": json.dumps(cfg), "semantic_dim": semantic_dim})
    assert path.stat().st_size < 4096
    return path


def test_a_small_file_asking_for_a_huge_model_is_refused_before_allocation(tmp_path, monkeypatch):
    path = _forged(tmp_path, {"dim": 16384, "heads": 128, "camera_layers": 200, "scene_layers": 200,
                              "renderer_layers": 200, "num_latents": 65536})
    t0 = time.time()
    with pytest.raises(CheckpointError, match="B parameters, above the limit.*WILDRAYZER_MAX_PARAMS"):
        load_model_checkpoint(path)
    assert time.time() - t0 < 20  # built on the meta device: nothing of that size was allocated
    # allowed by the flag, the file still does not hold the weights its header describes
    monkeypatch.setenv(MAX_PARAMS_ENV, "1e13")
    with pytest.raises(CheckpointError, match="does not fit the model its header describes; missing:"):
        load_model_checkpoint(path)


def test_header_values_are_validated_like_a_config_file(tmp_path):
    with pytest.raises(CheckpointError, match="model.heads' must lie in"):
        load_model_checkpoint(_forged(tmp_path, {"heads": 0}))
    with pytest.raises(CheckpointError, match="semantic_dim"):
        load_model_checkpoint(_forged(tmp_path, {}, semantic_dim="99999999"))


def test_the_api_and_inference_refuse_a_forged_file_in_one_line(tmp_path, capsys):
    from wildrayzer import WildRayZer

    path = _forged(tmp_path, {"dim": 16384, "heads": 128, "camera_layers": 200})
    with pytest.raises(CheckpointError):
        WildRayZer.from_pretrained(path, device="cpu")
    rc = cli(["infer", "--config", "configs/tiny/wildrayzer_inference.yaml", f"inference.model_path={path}",
              f"inference_out_root={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "forged.safetensors" in err
    out = tmp_path / "out"
    assert not out.exists() or all(p.name.startswith(".wildrayzer") for p in out.iterdir())  # at most its marker
