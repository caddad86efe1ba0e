"""Training that cannot make progress fails loudly, in one line, and never leaves a checkpoint it should not.

Through the console entry point (``wildrayzer.cli.main`` in this process) on a tiny synthetic dataset: a run whose
steps are all non-finite writes no checkpoint and exits 2; a resumed run that only produces non-finite steps leaves
the existing checkpoints byte for byte as they were; weights that turn non-finite (an update that overflows although
the gradient was finite) are never saved; a start from NaN weights and a step count <= 0 are refused before training.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_run import MODEL, QUIET, TRAIN_CFG, TRAIN_NOTES, one_error_line, run_cli, small_synth, tree

from wildrayzer.train import loop
from wildrayzer.weights import LATEST, latest_checkpoint, read_weights

pytestmark = pytest.mark.usefixtures("one_thread")

NOTES = (*TRAIN_NOTES, "step ")  # "step N: non-finite loss/gradient ... skipped" lines come before the error


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return small_synth(tmp_path_factory.mktemp("training_synth"))


def train_args(out: Path, synth: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(TRAIN_CFG), *MODEL, *QUIET, "model.num_target_views=2", "training.batch_size=2",
            "training.lr=1e-3", "training.lr_warmup=1", "data.num_workers=0", "training.checkpoint_every=1",
            "training.keep_last_n=0", "training.max_steps=3", f"training.output_dir={out}", "training.run_name=run",
            f"data.root={synth / 're10k_processed_v2'}", *extra]


def nan_from(first: int):
    def hook(step, loss):
        return loss * float("nan") if step >= first else loss

    return hook


def with_hook(monkeypatch, hook) -> None:
    monkeypatch.setattr(loop, "train", functools.partial(loop.train, fault_hook=hook))
    monkeypatch.delenv("WILDRAYZER_DEBUG", raising=False)


@pytest.mark.parametrize("steps", [1, 3])
def test_a_run_of_only_nonfinite_steps_writes_no_checkpoint(synth, tmp_path, monkeypatch, steps):
    with_hook(monkeypatch, nan_from(0))
    rc, _, err = run_cli(train_args(tmp_path, synth, f"training.max_steps={steps}"))
    one_error_line(rc, err, f"all {steps} steps of this run were non-finite", "no checkpoint written",
                   "last good checkpoint: none", notes=NOTES)
    assert err.count("non-finite loss/gradient") == steps
    ckpts = tmp_path / "run" / "checkpoints"
    assert not ckpts.exists() or not any(ckpts.iterdir()), sorted(p.name for p in ckpts.iterdir())


def test_a_resumed_run_of_only_nonfinite_steps_leaves_the_checkpoints_as_they_were(synth, tmp_path, monkeypatch):
    rc, _, err = run_cli(train_args(tmp_path, synth, "training.max_steps=2"))
    assert rc == 0, err
    ckpts = tmp_path / "run" / "checkpoints"
    before = tree(ckpts)
    with_hook(monkeypatch, nan_from(0))
    rc, _, err = run_cli(train_args(tmp_path, synth, "training.max_steps=4"))
    one_error_line(rc, err, "all 2 steps of this run were non-finite", "ckpt_00000002.safetensors", notes=NOTES)
    assert tree(ckpts) == before
    assert latest_checkpoint(tmp_path / "run").name == "ckpt_00000002.safetensors"


def test_weights_that_turn_nonfinite_are_never_saved(synth, tmp_path, monkeypatch):
    """The second optimizer step writes inf into a weight (finite loss and gradient: the non-finite guard cannot see
    it): the checkpoint of that step is not written, the error names the parameter and the last good checkpoint."""
    real = loop.build_optimizer
    poisoned = {}

    def build(model, t):
        opt = real(model, t)
        calls = [0]

        def overflowing_step(self, *a, **kw):
            out = super(type(self), self).step(*a, **kw)
            calls[0] += 1
            if calls[0] == 2:
                name, p = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
                with torch.no_grad():
                    p.view(-1)[0] = float("inf")
                poisoned["name"] = name
            return out

        opt.__class__ = type("Overflowing", (type(opt),), {"step": overflowing_step})  # the scheduler wraps .step
        return opt

    monkeypatch.setattr(loop, "build_optimizer", build)
    monkeypatch.delenv("WILDRAYZER_DEBUG", raising=False)
    rc, _, err = run_cli(train_args(tmp_path, synth, "training.max_steps=4"))
    one_error_line(rc, err, "weights turned non-finite by step 2", poisoned["name"], "ckpt_00000001.safetensors",
                   notes=NOTES)
    run = tmp_path / "run"
    assert latest_checkpoint(run).name == "ckpt_00000001.safetensors"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "ckpt_00000001.safetensors", "ckpt_00000001.state.pt", LATEST]
    weights, _ = read_weights(latest_checkpoint(run))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_a_start_from_nan_weights_is_refused_before_training(synth, tmp_path, monkeypatch):
    rc, _, err = run_cli(train_args(tmp_path / "a", synth, "training.max_steps=1"))
    assert rc == 0, err
    src = latest_checkpoint(tmp_path / "a" / "run")
    bad = tmp_path / "nan.safetensors"
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    state = load_file(str(src))
    key = sorted(state)[0]
    state[key][...] = float("nan")
    save_file(state, str(bad), metadata=meta)
    monkeypatch.delenv("WILDRAYZER_DEBUG", raising=False)
    rc, _, err = run_cli(train_args(tmp_path / "b", synth, f"training.init_from={bad}"))
    one_error_line(rc, err, "nan.safetensors", f"tensor '{key}'", "NaN", notes=NOTES)
    assert not (tmp_path / "b" / "run" / "checkpoints").exists()
    # and resuming from such a checkpoint is refused the same way, leaving the run as it is
    shutil.copy(bad, src)
    before = tree(tmp_path / "a")
    rc, _, err = run_cli(train_args(tmp_path / "a", synth, "training.max_steps=2"))
    one_error_line(rc, err, "resume checkpoint", f"tensor '{key}'", notes=NOTES)
    assert tree(tmp_path / "a") == before


@pytest.mark.parametrize("override,needle", [
    ("training.max_steps=0", "training.max_steps' must lie in"),
    ("training.max_steps=-5", "training.max_steps' must lie in"),
    ("training.max_steps=2.5", "training.max_steps"),
    ("training.max_steps=inf", "training.max_steps"),
    ("training.max_nonfinite_steps=0", "training.max_nonfinite_steps' must lie in"),
    ("training.checkpoint_every=-1", "training.checkpoint_every' must lie in"),
])
def test_a_run_that_cannot_take_a_step_is_a_config_error(synth, tmp_path, override, needle):
    rc, _, err = run_cli(train_args(tmp_path, synth, override))
    one_error_line(rc, err, needle)
    assert not (tmp_path / "run").exists()
