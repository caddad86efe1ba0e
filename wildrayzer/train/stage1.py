"""Stage 1: self-supervised RayZer pretraining, and the helpers every stage shares (given cameras, the VGG loss,
copy-paste over a batch)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .losses import rendering_loss


class Stage1Pretrain:
    """Self-supervised RayZer pretraining: render the targets, MSE + perceptual_weight x VGG perceptual.

    With ``training.camera_paste``, copy-paste cut-outs (``copy_paste.*``) are pasted into the views the camera
    estimator reads, and only those: the scene encoder and the loss see the views as given, so the estimator is taught
    the cameras that render the clean targets while objects move in its input (on the tiny model it learns to ignore
    the cut-outs, not the benchmark's transients: benchmarks/RESULTS.md v2.7)."""

    number = 1

    def __init__(self):
        self.perceptual = None
        self.paster = None

    def setup(self, cfg, device: torch.device, log: Callable[[str], None]) -> None:
        self.perceptual = build_perceptual(cfg.training, device, log)
        if cfg.training.camera_paste:
            from ..data.copy_paste import CopyPaste

            self.paster = CopyPaste(cfg.copy_paste, seed=cfg.training.seed)
            log(f"stage 1: the camera estimator reads views with pasted cut-outs (probability "
                f"{cfg.copy_paste.probability}) from {cfg.copy_paste.annotation_file} ({len(self.paster.ann_ids)} "
                "instances)")

    def forward(self, model: nn.Module, batch: dict, cfg) -> dict:
        images = batch["images"]
        camera_images = None
        if self.paster is not None:
            camera_images = paste_batch(self.paster, images, batch.get("frame_idx"))[0]
        return model(images, cfg.model.num_context_views, cameras=given_cameras(batch, cfg),
                     camera_images=camera_images)

    def compute_losses(self, batch: dict, out: dict, cfg) -> tuple[Tensor, dict[str, Tensor]]:
        target = batch["images"][:, cfg.model.num_context_views:]  # (B, T, 3, H, W)
        return rendering_loss(out["renders"], target, perceptual=self.perceptual,
                              perceptual_weight=cfg.training.perceptual_weight)


def batch_cameras(batch: dict) -> dict:
    """The batch's dataset cameras as a posed model takes them: {"c2w": (B, V, 4, 4), "fxfycxcy": (B, V, 4)}."""
    return {"c2w": batch["c2w"], "fxfycxcy": batch["fxfycxcy"]}


def given_cameras(batch: dict, cfg) -> dict | None:
    """The batch's cameras for a posed model (``model.cameras=given``), else None (the model predicts them)."""
    if cfg.model.cameras != "given":
        return None
    return batch_cameras(batch)


def paste_batch(paster, images: Tensor, frame_idx: Tensor | None) -> tuple[Tensor, Tensor]:
    """images: (B, V, 3, H, W), frame_idx: (B, V) the views' frame numbers (what ``copy_paste.motion=glide`` places
    the objects by) -> (pasted images, paste masks (B, V, 1, H, W)); ``paster`` a
    :class:`~wildrayzer.data.copy_paste.CopyPaste`. Each sample's seed comes from the torch RNG, which checkpoints
    restore: a resumed run pastes as an uninterrupted one."""
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    out, masks = [], []
    for i in range(images.shape[0]):
        x, m = paster(images[i].detach().cpu(), rng=seed + i, frame_idx=None if frame_idx is None else frame_idx[i])
        out.append(x)
        masks.append(m)
    return torch.stack(out).to(images), torch.stack(masks).to(images)


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
