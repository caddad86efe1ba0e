"""AdamW with decoupled weight decay on matrices only, and a cosine schedule with linear warmup."""

from __future__ import annotations

import math

import torch
from torch import nn

# Parameters whose name ends in one of these are never decayed (embeddings, learned tokens).
_NO_DECAY_NAMES = ("cam_token", "latents", "noise_token", "bias")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into decayed (weight matrices) and not decayed (norms, biases, embeddings, tokens)."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d))
                   for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if id(p) in norm_params or p.ndim < 2 or leaf in _NO_DECAY_NAMES or "embed" in leaf:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, tcfg) -> torch.optim.AdamW:
    """tcfg: the ``training`` config section."""
    groups = [g for g in param_groups(model, tcfg.weight_decay) if g["params"]]
    if not groups:
        raise ValueError("no trainable parameters for this stage")
    return torch.optim.AdamW(groups, lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2), eps=1e-8)


def cosine_with_warmup(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """LR multiplier at ``step`` (0-based): linear warmup to 1, cosine decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, tcfg) -> torch.optim.lr_scheduler.LambdaLR:
    warmup, total, floor = tcfg.lr_warmup, tcfg.max_steps, tcfg.min_lr_ratio
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_with_warmup(s, warmup, total, floor))
