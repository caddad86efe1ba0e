"""The loss-jump guard (training.rollback_db): a collapse is rolled back to the last good weights at a lower lr;
noise is not; a run that keeps jumping stops cleanly; under DDP one rank's jump rolls every rank back."""

import os
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from test_train_loop import RandomViews, cfg_for
from torch import nn

from wildrayzer.config import load_config
from wildrayzer.errors import ConfigError
from wildrayzer.train.ema import WeightEMA
from wildrayzer.train.loop import TrainingDivergedError, train
from wildrayzer.train.optim import build_scheduler, cosine_with_warmup
from wildrayzer.train.rollback import LossJumpGuard
from wildrayzer.weights import read_weights

GUARD = ["training.rollback_db=3", "training.rollback_every=2"]


def _guarded_linear(every=4, db=1.5, factor=0.5, ema=False):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    t = SimpleNamespace(lr_warmup=0, max_steps=100, min_lr_ratio=0.0, rollback_db=db, rollback_every=every,
                        rollback_lr_factor=factor, max_rollbacks=3)
    sched = build_scheduler(opt, t)
    avg = WeightEMA(model, 0.9) if ema else None
    return model, opt, sched, avg, LossJumpGuard(model, opt, sched, avg, t, step=0)


def _step(model, opt, sched, avg):
    model(torch.randn(4, 3)).square().mean().backward()
    opt.step()
    opt.zero_grad()
    sched.step()
    if avg is not None:
        avg.update(model)


def test_a_jump_restores_the_snapshot_promoted_by_a_healthy_block_and_lowers_the_lr():
    model, opt, sched, avg, guard = _guarded_linear(ema=True)
    snaps = {}
    for step in range(1, 13):
        _step(model, opt, sched, avg)
        assert not guard.jumped(0.01 * (1.1 if step % 2 else 0.9))  # +-0.4 dB of noise is no jump
        if guard.block_done():
            guard.end_block(step)
            snaps[step] = ({k: v.clone() for k, v in model.state_dict().items()},
                           {k: v.clone() for k, v in avg.shadow.items()})
    # steps 9-12 formed the last healthy block: snapshot 8 is good, snapshot 12 a candidate not yet confirmed
    jumps = []
    for _ in range(2):
        _step(model, opt, sched, avg)
        jumps.append(guard.jumped(0.025))  # +4 dB
    assert jumps == [False, True]  # once the mean of the last 4 losses lies 1.5 dB above the best block
    lr_before = sched.get_last_lr()[0]
    assert guard.roll_back() == 8 and guard.rollbacks == 1
    weights, shadow = snaps[8]
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, shadow[k]) for k, v in avg.shadow.items())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * lr_before)
    sched.step()
    assert sched.get_last_lr()[0] < 0.5 * lr_before * 1.0001  # the rest of the schedule is scaled too
    assert not any(guard.jumped(0.0101) for _ in range(4))  # back at the good level: watching on


def test_training_rolls_back_once_and_finishes(tmp_path, capfd):
    def spike_at_5(step, loss):  # the fifth step's loss x100 (+20 dB)
        return loss * 100.0 if step == 4 else loss

    extra = [*GUARD, "training.max_steps=8", "training.checkpoint_every=1", "training.keep_last_n=0",
             "training.log_every=1"]
    cfg = cfg_for(tmp_path, "spike", *extra)
    out = train(cfg, dataset=RandomViews(), fault_hook=spike_at_5)
    assert out["step"] == 8
    err = capfd.readouterr().err
    assert "step 5: training loss" in err
    # The logged lr is the one in use: the schedule's until the roll-back, half of it from there on.
    t = cfg.training
    logged = {int(m[1]): float(m[2]) for m in re.finditer(r"^step (\d+)/8 .* lr (\S+)", err, re.M)}
    sched = {k: t.lr * cosine_with_warmup(k, t.lr_warmup, t.max_steps, t.min_lr_ratio) for k in logged}
    assert sorted(logged) == list(range(1, 9))
    assert all(logged[k] == pytest.approx(sched[k] * (0.5 if k >= 5 else 1.0), rel=1e-3) for k in range(1, 8))
    ckpts = tmp_path / "spike" / "checkpoints"
    w2, _ = read_weights(ckpts / "ckpt_00000002.safetensors")  # the good snapshot (block 3-4 confirmed it)
    w5, _ = read_weights(ckpts / "ckpt_00000005.safetensors")  # written after the roll-back
    w8, _ = read_weights(ckpts / "ckpt_00000008.safetensors")
    assert all(torch.equal(w2[k], w5[k]) for k in w2)
    assert not all(torch.equal(w5[k], w8[k]) for k in w5)  # and training went on


def test_a_run_that_keeps_jumping_stops_cleanly(tmp_path):
    def spike_from_5(step, loss):
        return loss * 100.0 if step >= 4 else loss

    with pytest.raises(TrainingDivergedError,
                       match=r"jumped 20.0 dB .* after 1 roll-back\(s\).*of step 2, .*ckpt_00000006"):
        train(cfg_for(tmp_path, "jumps", *GUARD, "training.max_rollbacks=1", "training.max_steps=20",
                      "training.checkpoint_every=2"), dataset=RandomViews(), fault_hook=spike_from_5)


@pytest.mark.parametrize("override", ["training.rollback_db=-1", "training.rollback_lr_factor=0",
                                      "training.rollback_every=0"])
def test_guard_settings_out_of_range_are_config_errors(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(None, [override])


DDP_SCRIPT = textwrap.dedent("""
    import os, sys
    import torch
    from test_train_loop import RandomViews, cfg_for
    from wildrayzer.train.loop import train

    def spike_on_rank_1(step, loss):  # only rank 1 sees the jump
        return loss * 100.0 if step == 4 and os.environ["RANK"] == "1" else loss

    torch.set_num_threads(1)
    train(cfg_for(sys.argv[1], "ddp", "training.device=cpu", "training.rollback_db=3", "training.rollback_every=2",
                  "training.max_steps=6", "training.checkpoint_every=6", "training.batch_size=1"),
          dataset=RandomViews(), fault_hook=spike_on_rank_1)
""")


@pytest.mark.timeout(300)
def test_one_ranks_jump_rolls_back_every_rank(tmp_path):
    script = tmp_path / "ddp_rollback.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=280)
    assert res.returncode == 0, res.stderr[-3000:]
    # rank 0, which logs, saw no jump itself: it reports rank 1's and rolls back with it
    assert "step 5: training loss 10.0 dB above" in res.stderr and "rolled back to the weights of step 2" in res.stderr
    assert (tmp_path / "ddp" / "checkpoints" / "ckpt_00000006.safetensors").is_file()
