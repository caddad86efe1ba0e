"""Roll back to the last good weights when the training loss jumps and stays up (``training.rollback_db`` > 0).

A run can collapse without a single non-finite value: v1.7's seed 1 (benchmarks/RESULTS.md) went from 24.1 to 20.2 dB
training PSNR within 100 steps of its second camera-estimator phase, its cameras turned round, and it never came back.
The guard watches the loss on a log scale, ``10 log10(loss)`` (for an MSE loss: minus the PSNR), in blocks of
``training.rollback_every`` steps:

- a snapshot of the weights, optimizer and EMA (host memory) is taken at the start and after every block; it becomes
  the *good* one once the next block has ended without a jump, so the snapshot restored was never taken in the middle
  of a collapse that was not yet seen;
- after every step, when the mean of the last ``min(25, rollback_every)`` losses lies more than ``rollback_db`` above
  the best block mean, the good snapshot is restored, the learning rate of the rest of the run is multiplied by
  ``training.rollback_lr_factor``, and training goes on with the next batches (the step count and schedule go on;
  the steps since the snapshot are lost). After ``training.max_rollbacks`` roll-backs the run stops cleanly.

Every decision is taken by all ranks together (any rank seeing the jump rolls all back), so DDP replicas stay equal.
The snapshots live in memory only: a resumed run starts watching afresh (the lowered learning rate is part of the
scheduler state and survives). Non-finite steps are the loop's business (skipped, ``training.max_nonfinite_steps``).
"""

from __future__ import annotations

import copy
import math
from collections import deque

import torch
from torch import nn

from .ema import WeightEMA

_RECENT = 25  # losses averaged to call a jump (at batch 8 their mean stayed within 0.84 dB of the best block: v1.9)


def _to_host(obj):
    """Deep copy of a state (nested dicts/lists of tensors) with every tensor on the CPU."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_host(v) for v in obj)
    return copy.deepcopy(obj)


class LossJumpGuard:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, ema: WeightEMA | None,
                 tcfg, step: int):
        """tcfg: the ``training`` config section; ``step``: the step the run (or resumed run) starts at."""
        self.model, self.optimizer, self.scheduler, self.ema = model, optimizer, scheduler, ema
        self.db = float(tcfg.rollback_db)
        self.every = int(tcfg.rollback_every)
        self.lr_factor = float(tcfg.rollback_lr_factor)
        self.max_rollbacks = int(tcfg.max_rollbacks)
        self.rollbacks = 0
        self.recent: deque[float] = deque(maxlen=min(_RECENT, self.every))
        self.block: list[float] = []
        self.best = math.inf  # lowest block mean (dB) of the run; the restored weights reached it (within rollback_db)
        self.recent_mean = math.nan
        self.good = self._snapshot(step)
        self.candidate = None

    def _snapshot(self, step: int) -> dict:
        snap = {"step": step, "model": _to_host(self.model.state_dict()),
                "optimizer": _to_host(self.optimizer.state_dict())}
        if self.ema is not None:
            snap["ema"] = (_to_host(self.ema.shadow), self.ema.updates)
        return snap

    def jumped(self, loss: float) -> bool:
        """Record one finite step's loss; True when the recent mean lies ``rollback_db`` above the best block
        (this rank's view; the caller combines the ranks)."""
        x = 10.0 * math.log10(max(loss, 1e-20))
        self.recent.append(x)
        self.block.append(x)
        self.recent_mean = sum(self.recent) / len(self.recent)
        return len(self.recent) == self.recent.maxlen and self.recent_mean > self.best + self.db

    def block_done(self) -> bool:
        return len(self.block) >= self.every

    def end_block(self, step: int) -> None:
        """A block ended without a jump (a jump would have emptied it): the snapshot taken before it is good now;
        take the next one."""
        if self.candidate is not None:
            self.good = self.candidate
        self.best = min(self.best, sum(self.block) / len(self.block))
        self.block = []
        self.candidate = self._snapshot(step)

    def roll_back(self) -> int:
        """Restore the good snapshot, lower the learning rate; returns the step the restored weights are from."""
        snap = self.good
        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(snap["optimizer"])
        if self.ema is not None:
            shadow, updates = snap["ema"]
            device = {n: p.device for n, p in self.model.named_parameters()}
            self.ema.shadow = {n: t.to(device[n], copy=True) for n, t in shadow.items()}
            self.ema.updates = updates
        self.scheduler.base_lrs = [lr * self.lr_factor for lr in self.scheduler.base_lrs]
        last = self.scheduler.get_last_lr()
        for group, lr in zip(self.optimizer.param_groups, last):  # the log reads the lr in use from the groups
            group["lr"] = lr * self.lr_factor
        self.rollbacks += 1
        self.recent.clear()
        self.block = []
        self.candidate = None
        return snap["step"]
