"""Stage 3: joint training of everything but the semantic backbone, with copy-paste transients.

Per batch: COCO cut-outs are pasted onto the views (``copy_paste.enabled``; exact paste masks); a frozen copy of the
static model (``pseudolabel.stage1_checkpoint``, else ``training.init_from`` — stage 2 leaves the stage-1 camera,
scene and renderer untouched) renders the targets from the un-pasted context views for the pseudo-masks (masking the
context tokens its motion head flags when ``pseudolabel.mask_context``: a second labelling round); the model
masks dynamic context tokens with the noise token (MAE, from its own predicted masks, as at inference), renders the
targets and is trained with the rendering loss masked by (pseudo-mask U paste mask) plus the mask BCE.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .losses import rendering_loss
from .stage1 import build_perceptual
from .stage2 import MotionStageBase


class Stage3JointCopyPaste(MotionStageBase):
    number = 3

    def __init__(self):
        super().__init__()
        self.perceptual = None

    def setup(self, cfg, device: torch.device, log: Callable[[str], None]) -> None:
        super().setup(cfg, device, log)
        self.perceptual = build_perceptual(cfg.training, device, log)
        if cfg.model.use_dinov3_pseudolabel:
            src = cfg.pseudolabel.stage1_checkpoint or cfg.training.init_from
            if not src:
                raise ConfigError("stage 3 pseudo-labels need a frozen static model: set pseudolabel.stage1_checkpoint "
                                  "or training.init_from (the stage-2 run)")
            self.load_labeller(src, cfg, device, log)

    def forward(self, model: nn.Module, batch: dict, cfg) -> dict:
        vc, original, cams, images, paste, feats = self.inputs(batch, cfg)
        static_renders = None
        if self.static_model is not None:
            labeller_cams = self.labeller_cameras(batch, cams)
            static_renders = self.labeller_renders(self.static_model, original, labeller_cams, batch, cfg)
        labelled = dict(batch, images=images, paste_masks=paste) if paste is not None else batch
        out = model(images, vc, semantic_feats=feats, motion_all_views=True, cameras=cams)
        labels, valid = self.labels(static_renders, labelled, cfg, feats)
        out["mask_labels"], out["mask_valid"] = labels, valid
        out["pasted_images"], out["paste_masks"] = images, paste
        return out

    def compute_losses(self, batch: dict, out: dict, cfg) -> tuple[Tensor, dict[str, Tensor]]:
        vc = cfg.model.num_context_views
        labels, valid = out["mask_labels"][:, vc:], out["mask_valid"][:, vc:]
        # Unreliable pseudo-masks still exclude pasted pixels (known exactly) but nothing else.
        paste = out.get("paste_masks")
        dynamic = torch.where(valid[..., None, None, None], labels, torch.zeros_like(labels))
        if paste is not None:
            dynamic = torch.maximum(dynamic, paste[:, vc:])
        render, logs = rendering_loss(out["renders"], out["pasted_images"][:, vc:], perceptual=self.perceptual,
                                      perceptual_weight=cfg.training.perceptual_weight, weight=1.0 - dynamic)
        bce, mlogs = self.mask_loss(out)
        logs.update(mlogs)
        logs["dynamic_frac"] = dynamic.mean().detach()
        return render + bce, logs
