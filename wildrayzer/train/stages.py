"""What differs between training stages: which top-level parts train, how the model is called, which losses.

A stage implements :class:`Stage`. The loop knows nothing else about stages; stages 2 and 3 plug in as
``wildrayzer/train/stage2.py`` / ``stage3.py`` calling :func:`register_stage` on import (imported on demand).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..losses import rendering_loss

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


class Stage1Pretrain:
    """Self-supervised RayZer pretraining: render the targets, MSE + perceptual_weight x VGG perceptual."""

    number = 1

    def __init__(self):
        self.perceptual = None

    def setup(self, cfg, device: torch.device, log: Callable[[str], None]) -> None:
        self.perceptual = build_perceptual(cfg.training, device, log)

    def forward(self, model: nn.Module, batch: dict, cfg) -> dict:
        return model(batch["images"], cfg.model.num_context_views, cameras=given_cameras(batch, cfg))

    def compute_losses(self, batch: dict, out: dict, cfg) -> tuple[Tensor, dict[str, Tensor]]:
        target = batch["images"][:, cfg.model.num_context_views:]  # (B, T, 3, H, W)
        return rendering_loss(out["renders"], target, perceptual=self.perceptual,
                              perceptual_weight=cfg.training.perceptual_weight)


def given_cameras(batch: dict, cfg) -> dict | None:
    """The batch's cameras for a posed model (``model.cameras=given``), else None (the model predicts them)."""
    if cfg.model.cameras != "given":
        return None
    return {"c2w": batch["c2w"], "fxfycxcy": batch["fxfycxcy"]}


def build_perceptual(tcfg, device: torch.device, log: Callable[[str], None]):
    """The VGG-19 loss when ``training.perceptual_weights_path`` is set, else None (and the log says so once)."""
    if tcfg.perceptual_weight <= 0:
        return None
    if not tcfg.perceptual_weights_path:
        log(f"perceptual loss DISABLED: training.perceptual_weights_path is empty (weight {tcfg.perceptual_weight} "
            "ignored); point it at a torchvision vgg19 state dict to enable it")
        return None
    from ..perceptual import PerceptualLoss

    log(f"perceptual loss: VGG-19 from {tcfg.perceptual_weights_path}, weight {tcfg.perceptual_weight}")
    return PerceptualLoss.from_file(tcfg.perceptual_weights_path).to(device)


_STAGES: dict[int, Callable[[], object]] = {1: Stage1Pretrain}


def register_stage(number: int, factory: Callable[[], object]) -> None:
    """Make ``training.stage=number`` use ``factory()`` (stage 2/3 modules call this on import)."""
    _STAGES[number] = factory


def get_stage(number: int):
    if number not in _STAGES:
        import importlib

        try:  # stage modules register themselves on import
            importlib.import_module(f"{__package__}.stage{number}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.stage{number}":
                raise
    if number not in _STAGES:
        raise ConfigError(f"training.stage={number} is not available in this build (no wildrayzer/train/stage"
                          f"{number}.py)")
    return _STAGES[number]()
