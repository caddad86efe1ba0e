"""The training loop: 2-step stage 1 on embedded data via the CLI, exact resume after a kill, non-finite guard."""

import pytest
import torch
from tiny_run import TINY_MODEL
from torch.utils.data import Dataset

from wildrayzer.cli import main as cli_main
from wildrayzer.config import load_config
from wildrayzer.errors import ConfigError
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


def full_and_resumed_runs(tmp_path, extra: list[str]) -> tuple[dict, dict]:
    """Run "full" to training.max_steps=5 uninterrupted, and "killed" killed at step 3 (checkpoints every 2) then
    resumed to the end."""
    extra = ["training.max_steps=5", "training.checkpoint_every=2", *extra]
    full = train(cfg_for(tmp_path, "full", *extra), dataset=RandomViews())

    def kill_at_3(step, loss):
        if step == 3:
            raise Killed
        return loss

    with pytest.raises(Killed):
        train(cfg_for(tmp_path, "killed", *extra), dataset=RandomViews(), fault_hook=kill_at_3)
    assert latest_checkpoint(tmp_path / "killed").name == "ckpt_00000002.safetensors"
    return full, train(cfg_for(tmp_path, "killed", *extra), dataset=RandomViews())


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    full, resumed = full_and_resumed_runs(tmp_path, ["training.grad_accum_steps=2"])
    assert full["step"] == 5 and resumed["step"] == 5
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


def test_weight_ema_follows_the_warmed_up_recurrence_and_swaps_back():
    from wildrayzer.train.ema import WeightEMA

    net = torch.nn.Linear(3, 2)
    net.bias.requires_grad_(False)  # frozen: not averaged
    ema = WeightEMA(net, decay=0.9)
    assert set(ema.shadow) == {"weight"}
    expected = net.weight.detach().clone()
    for n, value in enumerate((1.0, -2.0, 4.0, 0.5)):
        with torch.no_grad():
            net.weight.fill_(value)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * value
        ema.update(net)
        assert torch.allclose(ema.shadow["weight"], expected)
    with pytest.raises(Killed):
        with ema.swapped_in(net) as raw:
            assert torch.equal(net.weight, ema.shadow["weight"]) and torch.all(raw["weight"] == 0.5)
            raise Killed
    assert torch.all(net.weight == 0.5)  # raw weights back, also after an exception


def test_ema_checkpoints_hold_the_average_and_a_killed_run_resumes_exactly(tmp_path):
    from wildrayzer.train.checkpoint import load_training_state

    full, resumed = full_and_resumed_runs(tmp_path, ["training.ema_decay=0.5"])
    a, _ = read_weights(full["checkpoint"])
    b, _ = read_weights(resumed["checkpoint"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    raw_a = load_training_state(full["checkpoint"])["ema"]["raw"]
    raw_b = load_training_state(resumed["checkpoint"])["ema"]["raw"]
    assert raw_a.keys() == raw_b.keys() and all(torch.equal(raw_a[k], raw_b[k]) for k in raw_a)
    assert not all(torch.equal(a[k], raw_a[k]) for k in raw_a)  # the weights file is the average, not the raw weights
    plain = train(cfg_for(tmp_path, "plain", "training.max_steps=5"), dataset=RandomViews())
    c, _ = read_weights(plain["checkpoint"])
    assert all(torch.equal(raw_a[k], c[k]) for k in raw_a)  # averaging does not change what the optimizer does
    # a run that averaged resumes from its raw weights even with the average turned off
    cont = train(cfg_for(tmp_path, "full", "training.max_steps=6"), dataset=RandomViews())
    ref = train(cfg_for(tmp_path, "plain", "training.max_steps=6"), dataset=RandomViews())
    d, _ = read_weights(cont["checkpoint"])
    e, _ = read_weights(ref["checkpoint"])
    assert all(torch.equal(d[k], e[k]) for k in d)


@pytest.mark.parametrize("entry", [{"updates": 2, "raw": {"no.such.weight": torch.zeros(1)}},
                                   {"updates": -1, "raw": {}}, [1, 2]])
def test_a_malformed_ema_entry_is_one_checkpoint_error(tmp_path, entry):
    from wildrayzer.errors import CheckpointError

    run = train(cfg_for(tmp_path, "r", "training.max_steps=2", "training.ema_decay=0.9"), dataset=RandomViews())
    state_path = run["checkpoint"].with_name(run["checkpoint"].name.replace(".safetensors", ".state.pt"))
    state = torch.load(state_path, weights_only=True)
    state["ema"] = entry
    torch.save(state, state_path)
    with pytest.raises(CheckpointError, match="'ema' entry"):
        train(cfg_for(tmp_path, "r", "training.max_steps=3", "training.ema_decay=0.9"), dataset=RandomViews())


def test_compile_on_a_cpu_without_a_cxx_compiler_is_one_config_error_before_anything_is_written(
        tmp_path, monkeypatch, capsys, repo):
    """training.compile=true on a CPU (tools/posed_to_selfsup.sh's default since v2.6) needs a C++ compiler for
    inductor; a machine without one gets a one-line error naming the way out, and no run directory."""
    monkeypatch.setenv("CXX", "no-such-cxx-compiler")
    with pytest.raises(ConfigError, match="'no-such-cxx-compiler' is not on PATH.*training.compile=false"):
        train(cfg_for(tmp_path, "compiled", "training.compile=true", "training.device=cpu", "training.max_steps=1"),
              dataset=RandomViews())
    assert not (tmp_path / "compiled").exists()
    capsys.readouterr()
    rc = cli_main(["train", "--config", str(repo / "configs/tiny/wildrayzer_stage1_pretrain.yaml"),
                   f"training.output_dir={tmp_path}", "training.run_name=cli", "training.compile=true",
                   "training.device=cpu", "training.max_steps=1", "logging.progress=false"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not (tmp_path / "cli").exists()
    assert len(err.splitlines()) == 1 and "needs a C++ compiler" in err, err
