"""The training loop: 2-step stage 1 on embedded data via the CLI, exact resume after a kill, non-finite guard."""

import pytest
import torch
from tiny_run import TINY_MODEL
from torch.utils.data import Dataset

from wildrayzer.cli import main as cli_main
from wildrayzer.config import load_config
from wildrayzer.train.loop import TrainingDivergedError, train
from wildrayzer.weights import latest_checkpoint, load_model_checkpoint, read_weights

TINY = [*TINY_MODEL, "model.num_context_views=2", "model.num_target_views=2", "training.batch_size=2",
        "training.lr=1e-3", "training.lr_warmup=1", "logging.progress=false", "logging.tensorboard=false",
        "data.num_workers=0"]


class RandomViews(Dataset):
    """Deterministic per index, plus noise from the global torch RNG (so RNG restore is exercised)."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        base = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(i))
        return {"images": (base + 0.05 * torch.rand(4, 3, 32, 32)).clamp(0, 1), "scene": f"s{i}"}


def cfg_for(tmp_path, name, *extra):
    return load_config(None, TINY + [f"training.output_dir={tmp_path}", f"training.run_name={name}", *extra])


class Killed(Exception):
    pass


def test_two_step_stage1_on_embedded_data_via_cli(tmp_path, repo):
    from wildrayzer.data import SynthParams, generate

    generate(tmp_path / "synth", SynthParams(static_train=4, static_test=1, dynamic_train=1, dynamic_test=1,
                                             frames=12, coco_images=2), progress=False)
    rc = cli_main(["train", "--config", str(repo / "configs/tiny/wildrayzer_stage1_pretrain.yaml"),
                   "training.max_steps=2", f"training.output_dir={tmp_path / 'exp'}",
                   f"data.root={tmp_path / 'synth/re10k_processed_v2'}", "logging.progress=false"])
    assert rc == 0
    run = tmp_path / "exp" / "tiny_stage1_pretrain"
    assert (run / "config.yaml").is_file() and (run / "git_sha.txt").read_text().strip()
    assert list((run / "tensorboard").iterdir())
    loaded = load_model_checkpoint(run)
    assert loaded.metadata["step"] == "2" and loaded.metadata["stage"] == "1"
    assert loaded.config.model.image_size == 64
    # a run that exists continues from it (resume=true by default) instead of starting over
    rc = cli_main(["train", "--config", str(repo / "configs/tiny/wildrayzer_stage1_pretrain.yaml"),
                   "training.max_steps=2", f"training.output_dir={tmp_path / 'exp'}",
                   f"data.root={tmp_path / 'synth/re10k_processed_v2'}", "logging.progress=false"])
    assert rc == 0 and latest_checkpoint(run).name == "ckpt_00000002.safetensors"
    # a mismatched view count against the existing run is a user error: exit code 2
    assert cli_main(["train", "--config", str(repo / "configs/tiny/wildrayzer_stage1_pretrain.yaml"),
                     "training.max_steps=3", f"training.output_dir={tmp_path / 'exp'}", "model.num_target_views=5",
                     f"data.root={tmp_path / 'synth/re10k_processed_v2'}", "logging.progress=false"]) == 2


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    extra = ["training.max_steps=5", "training.checkpoint_every=2", "training.grad_accum_steps=2"]
    full = train(cfg_for(tmp_path, "full", *extra), dataset=RandomViews())
    assert full["step"] == 5

    def kill_at_3(step, loss):
        if step == 3:
            raise Killed
        return loss

    with pytest.raises(Killed):
        train(cfg_for(tmp_path, "killed", *extra), dataset=RandomViews(), fault_hook=kill_at_3)
    assert latest_checkpoint(tmp_path / "killed").name == "ckpt_00000002.safetensors"
    resumed = train(cfg_for(tmp_path, "killed", *extra), dataset=RandomViews())
    assert resumed["step"] == 5
    a, _ = read_weights(full["checkpoint"])
    b, _ = read_weights(resumed["checkpoint"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-exact on one CPU process


def test_nonfinite_steps_are_skipped_counted_and_stop_cleanly(tmp_path):
    extra = ["training.max_steps=4", "training.checkpoint_every=1", "training.keep_last_n=0"]

    def nan_at_1(step, loss):
        return loss * float("nan") if step == 1 else loss

    out = train(cfg_for(tmp_path, "nan", *extra), dataset=RandomViews(), fault_hook=nan_at_1)
    assert out["nonfinite_steps"] == 1 and out["step"] == 4
    ckpts = tmp_path / "nan" / "checkpoints"
    w1, _ = read_weights(ckpts / "ckpt_00000001.safetensors")
    w2, _ = read_weights(ckpts / "ckpt_00000002.safetensors")  # after the skipped step: unchanged
    w3, _ = read_weights(ckpts / "ckpt_00000003.safetensors")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not all(torch.equal(w2[k], w3[k]) for k in w2)

    def nan_from_2(step, loss):
        return loss * float("nan") if step >= 2 else loss

    with pytest.raises(TrainingDivergedError, match="3 consecutive non-finite steps.*ckpt_0000000"):
        train(cfg_for(tmp_path, "diverge", "training.max_nonfinite_steps=3", "training.max_steps=10",
                      "training.checkpoint_every=2"), dataset=RandomViews(), fault_hook=nan_from_2)
    last = latest_checkpoint(tmp_path / "diverge")
    w, _ = read_weights(last)
    assert all(torch.isfinite(v).all() for v in w.values())
