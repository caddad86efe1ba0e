"""What differs between training stages: which top-level parts train, how the model is called, which losses.

A stage implements :class:`Stage` (``stage1.py``, ``stage2.py``, ``stage3.py``); :data:`STAGES` maps
``training.stage`` to it. The loop knows nothing else about stages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .stage1 import Stage1Pretrain
from .stage2 import Stage2MotionMask
from .stage3 import Stage3JointCopyPaste

# Top-level parts of WildRayZer that train in each stage (the semantic backbone lives outside the model: frozen).
# ``training.freeze_parts`` holds some of them frozen on top of this (e.g. the camera estimator in stage 3).
_TRAINABLE = {1: ("tokenizer", "camera", "scene", "renderer"), 2: ("motion",),
              3: ("tokenizer", "camera", "scene", "renderer", "motion", "noise_token")}


def trainable_modules(model: nn.Module, stage: int, freeze: Sequence[str] = ()) -> list[str]:
    """Names of the top-level modules / parameters of ``model`` that train in ``stage`` minus ``freeze`` (only those
    that exist; the noise token only when MAE masking is on, since otherwise it never receives a gradient)."""
    names = []
    for name in _TRAINABLE[stage]:
        part = getattr(model, name, None)
        if part is None or name in freeze:
            continue
        if name == "noise_token" and not model.use_mae_masking:
            continue
        names.append(name)
    if stage == 2 and not names and "motion" not in freeze:
        raise ConfigError("training.stage=2 trains the motion estimator: set model.use_motion_mask=true")
    if not names:
        raise ConfigError(f"training.freeze_parts={list(freeze)} leaves nothing to train in stage {stage} (it trains "
                          f"{', '.join(_TRAINABLE[stage])})")
    return names


def apply_trainable(model: nn.Module, stage: int, freeze: Sequence[str] = ()) -> list[str]:
    """Set ``requires_grad`` so that exactly the stage's parts (minus ``freeze``) train; returns their names."""
    names = trainable_modules(model, stage, freeze)
    model.requires_grad_(False)
    for name in names:
        part = getattr(model, name)
        part.requires_grad_(True)
    return names


class Stage(Protocol):
    number: int

    def setup(self, cfg, device: torch.device, log: Callable[[str], None]) -> None:
        """Build frozen helpers (VGG, semantic backbone, pseudo-labeller) on ``device``; called once per process."""

    def forward(self, model: nn.Module, batch: dict, cfg) -> dict:
        """Run ``model`` (possibly DDP-wrapped: call it, do not reach into it) on a device batch -> predictions."""

    def compute_losses(self, batch: dict, out: dict, cfg) -> tuple[Tensor, dict[str, Tensor]]:
        """-> (scalar loss, detached scalar logs). Logs named ``psnr`` show on the progress bar."""

    # Optional: ``semantic_dim(cfg) -> int``, the channel count the motion estimator is built with (default 0).


STAGES: dict[int, Callable[[], Stage]] = {1: Stage1Pretrain, 2: Stage2MotionMask, 3: Stage3JointCopyPaste}


def get_stage(number: int) -> Stage:
    if number not in STAGES:
        raise ConfigError(f"training.stage={number} is not a stage (choose one of {sorted(STAGES)})")
    return STAGES[number]()
