"""Stage 1: self-supervised RayZer pretraining, and the helpers every stage shares (given cameras, the VGG loss)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .losses import rendering_loss


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
    from .perceptual import PerceptualLoss

    log(f"perceptual loss: VGG-19 from {tcfg.perceptual_weights_path}, weight {tcfg.perceptual_weight}")
    return PerceptualLoss.from_file(tcfg.perceptual_weights_path).to(device)
