"""Exponential moving average (EMA) of the trainable weights (``training.ema_decay`` > 0).

After every optimizer step: ``shadow = d * shadow + (1 - d) * weight`` with ``d = min(ema_decay, (1 + n) / (10 + n))``
(n = updates so far), so early averages are not dominated by the initial weights. Skipped (non-finite) steps do not
update it. Checkpoints hold the EMA weights in the ``.safetensors`` file (what inference, warm starts and
``from_pretrained`` read), and the raw weights the optimizer works on in the ``.state.pt`` (``"ema"`` entry), so a
resumed run continues exactly. Frozen parameters and buffers are not averaged (they do not change).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..errors import CheckpointError


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.shadow: dict[str, Tensor] = {n: p.detach().float().clone()
                                          for n, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(d).add_(p.detach().float(), alpha=1.0 - d)
        self.updates += 1

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[dict[str, Tensor]]:
        """Inside the block the model holds the EMA weights; yields the raw weights (name -> CPU copy), which are put
        back on exit, also when the block raises."""
        params = dict(model.named_parameters())
        raw = {n: params[n].detach().to("cpu", copy=True) for n in self.shadow}
        with torch.no_grad():
            for n, s in self.shadow.items():
                params[n].copy_(s)
        try:
            yield raw
        finally:
            with torch.no_grad():
                for n, r in raw.items():
                    params[n].copy_(r)

    def resume(self, model: nn.Module, entry: dict | None, where: str) -> None:
        """After the model was loaded from a checkpoint's weights file (the EMA weights when ``entry`` is given):
        take those as the shadow and put the raw weights of ``entry`` (``{"updates", "raw"}``) back into the model.
        Without an entry (the run had no EMA so far) the averaging starts from the loaded weights."""
        params = dict(model.named_parameters())
        self.shadow = {n: params[n].detach().float().clone() for n in self.shadow}
        if entry is None:
            return
        restore_raw_weights(model, entry, where)
        self.updates = int(entry["updates"])


def ema_entry(raw: dict[str, Tensor], updates: int) -> dict:
    """The training state's ``"ema"`` entry: raw weights (those the weights file does not hold) and the update count."""
    return {"updates": int(updates), "raw": raw}


def restore_raw_weights(model: nn.Module, entry: dict, where: str) -> None:
    """Copy an ``"ema"`` entry's raw weights into ``model`` (a run that used EMA resumes from its raw weights, whether
    or not it still uses EMA); a malformed entry is one CheckpointError line naming ``where``."""
    params = dict(model.named_parameters())
    raw = entry.get("raw") if isinstance(entry, dict) else None
    updates = entry.get("updates") if isinstance(entry, dict) else None
    if not isinstance(raw, dict) or not isinstance(updates, int) or isinstance(updates, bool) or updates < 0:
        raise CheckpointError(f"{where}: its 'ema' entry is not {{'updates': int, 'raw': {{name: tensor}}}}; delete "
                              "that checkpoint's files or start a new run")
    for name, value in raw.items():
        p = params.get(name)
        if p is None or not torch.is_tensor(value) or value.shape != p.shape:
            raise CheckpointError(f"{where}: its 'ema' entry's raw weight '{name}' does not fit this model; delete "
                                  "that checkpoint's files or start a new run")
        with torch.no_grad():
            p.copy_(value)
