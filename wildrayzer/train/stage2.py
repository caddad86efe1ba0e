"""Stage 2: the stage-1 model is frozen; only the motion-mask estimator trains, against pseudo-motion masks.

Per batch: the frozen model renders the targets (static scene from the context views; no token masking, except in
a second labelling round, ``pseudolabel.mask_context``, where the context tokens the head flags are masked). The
labeller is the model itself, or the frozen model ``pseudolabel.stage1_checkpoint`` names (a posed one renders with
the dataset's cameras, though the trained model predicts its own: :meth:`MotionStageBase.labeller_cameras`); the
pseudo-mask constructor compares renders and photos (semantic + SSIM dissimilarity, co-segmentation, GrabCut) and
the estimator, run over all views, is supervised by BCE on the targets, skipping targets whose static render is too
poor to trust (``training.psnr_filter_threshold``). Copy-paste masks (when ``copy_paste.enabled``) join the targets'
labels; context views are not supervised (see :meth:`MotionStageBase.labels`).
Ground-truth masks in the batch are never read: the method is self-supervised.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .losses import mask_bce_loss
from .stage1 import batch_cameras, given_cameras, paste_batch


def check_supervision(cfg) -> None:
    """Turning pseudo-labels off must never silently zero the mask loss."""
    if not cfg.model.use_motion_mask:
        raise ConfigError(f"training.stage={cfg.training.stage} needs the motion estimator: set "
                          "model.use_motion_mask=true")
    if not cfg.model.use_dinov3_pseudolabel and not cfg.copy_paste.enabled:
        raise ConfigError("the motion estimator has no supervision: model.use_dinov3_pseudolabel=false and "
                          "copy_paste.enabled=false. Enable pseudo-labels or copy-paste (or both)")
    if cfg.model.use_dinov3_pseudolabel and cfg.semantic.backbone == "none":
        raise ConfigError("model.use_dinov3_pseudolabel=true needs semantic features: set semantic.backbone="
                          "efficientnet_lite0 (offline) or dinov3")


class MotionStageBase:
    """Shared by stages 2 and 3: frozen semantic backbone, pseudo-labels, BCE."""

    number = 0

    def __init__(self):
        self.semantic = None
        self.paster = None
        self.static_model = None  # a frozen labeller of its own (stage 3; stage 2 with pseudolabel.stage1_checkpoint)
        self.mask_weight = 1.0
        self.pos_weight = 1.0

    def semantic_dim(self, cfg) -> int:
        from ..semantic import build_semantic_backbone

        if self.semantic is None:
            self.semantic = build_semantic_backbone(cfg.semantic)
        return int(self.semantic.out_dim)

    def setup(self, cfg, device: torch.device, log: Callable[[str], None]) -> None:
        check_supervision(cfg)
        self.semantic_dim(cfg)
        self.semantic = self.semantic.to(device)
        self.mask_weight = float(cfg.training.mask_distill_loss_weight)
        self.pos_weight = float(cfg.training.mask_pos_weight)
        if cfg.copy_paste.enabled:
            from ..data.copy_paste import CopyPaste

            self.paster = CopyPaste(cfg.copy_paste, seed=cfg.training.seed)
            log(f"stage {self.number}: copy-paste from {cfg.copy_paste.annotation_file} ({len(self.paster.ann_ids)} "
                "instances)")
        log(f"stage {self.number}: semantic backbone {cfg.semantic.backbone} ({self.semantic.out_dim} channels); "
            f"pseudo-labels {'on' if cfg.model.use_dinov3_pseudolabel else 'OFF'}; copy-paste "
            f"{'on' if cfg.copy_paste.enabled else 'off'}; PSNR filter {cfg.training.psnr_filter_threshold} dB")
        threshold = cfg.pseudolabel.mask_token_threshold
        if threshold is not None:
            log(f"stage {self.number}: the labeller masks context tokens above {threshold}"
                if cfg.pseudolabel.mask_context else
                f"stage {self.number}: pseudolabel.mask_token_threshold={threshold} unused (pseudolabel.mask_context "
                "is off: the labeller masks no tokens)")

    def load_labeller(self, src: str, cfg, device: torch.device, log: Callable[[str], None]) -> None:
        """Load the frozen static model whose renders make the pseudo-labels from ``src`` (a run dir or weights
        file). A posed labeller (``model.cameras=given``) renders with the dataset's cameras whatever the trained
        model does; it must read the trained model's views (count and size)."""
        from ..weights import load_model_checkpoint

        loaded = load_model_checkpoint(src)
        if cfg.pseudolabel.mask_context and loaded.model.motion is None:
            raise ConfigError(f"pseudolabel.mask_context=true needs a static model with a motion head; "
                              f"{loaded.path} has none (point pseudolabel.stage1_checkpoint at a stage-2 or "
                              "stage-3 run)")
        for key in ("image_size", "num_context_views", "num_target_views"):
            mine, theirs = getattr(cfg.model, key), getattr(loaded.config.model, key)
            if mine != theirs:
                raise ConfigError(f"the labeller {loaded.path} was trained with model.{key}={theirs}, this run has "
                                  f"{mine}: label with a model of the same views")
        self.static_model = loaded.model.to(device).eval().requires_grad_(False)
        posed = self.static_model.camera is None
        log(f"stage {self.number}: pseudo-labels rendered by the frozen static model {loaded.path}"
            + (" with the dataset's cameras (posed)" if posed else "")
            + (", its moving context tokens masked" if cfg.pseudolabel.mask_context else ""))

    def labeller_cameras(self, batch: dict, cams: dict | None) -> dict | None:
        """The cameras the separate labeller renders with: the batch's own for a posed labeller, else ``cams``
        (the trained model's: None when it predicts them)."""
        if self.static_model is not None and self.static_model.camera is None:
            return batch_cameras(batch)
        return cams

    def paste(self, images: Tensor, frame_idx: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """images: (B, V, 3, H, W), frame_idx: (B, V) -> pasted images and paste masks (B, V, 1, H, W), or (images,
        None)."""
        if self.paster is None:
            return images, None
        return paste_batch(self.paster, images, frame_idx)

    def features(self, images: Tensor) -> Tensor:
        """images: (B, V, 3, H, W) -> (B, V, C, h, w) frozen semantic features."""
        b, v = images.shape[:2]
        f = self.semantic(images.flatten(0, 1))
        return f.view(b, v, *f.shape[1:])

    def inputs(self, batch: dict, cfg) -> tuple[int, Tensor, dict | None, Tensor, Tensor | None, Tensor]:
        """-> (context count, the batch's images, its given cameras or None, the images with pasted objects, the
        paste masks (B, V, 1, H, W) or None, the semantic features of the pasted images)."""
        original = batch["images"]
        images, paste = self.paste(original, batch.get("frame_idx"))
        return cfg.model.num_context_views, original, given_cameras(batch, cfg), images, paste, self.features(images)

    @torch.no_grad()
    def labeller_renders(self, static_model: nn.Module, original: Tensor, cams: dict | None, batch: dict,
                         cfg) -> Tensor:
        """The frozen static model's renders for the pseudo-labels, from the un-pasted images ``original`` (B, V, 3,
        H, W) (pasted objects leave no ghosts), its motion head masking the context tokens it flags in a second
        labelling round (``pseudolabel.mask_context``) -> the targets from the context views (B, V - Vc, 3, H, W),
        or, with ``pseudolabel.render_from=farthest``, every view from the Vc views farthest from it in time
        (B, V, 3, H, W; :mod:`wildrayzer.pseudolabel.far_context`)."""
        from ..pseudolabel.far_context import gather_cameras, gather_views, render_from_farthest

        vc = cfg.model.num_context_views

        def render(images: Tensor, cameras: dict | None) -> Tensor:
            return static_model(images, vc, semantic_feats=self.features(images[:, :vc]),
                                apply_mae=bool(cfg.pseudolabel.mask_context), cameras=cameras,
                                mask_token_threshold=cfg.pseudolabel.mask_token_threshold)["renders"]

        if cfg.pseudolabel.render_from == "context":
            return render(original, cams)
        if "frame_idx" not in batch:
            raise ConfigError("pseudolabel.render_from=farthest needs the batch's frame numbers (frame_idx), which "
                              "this dataset does not provide; set pseudolabel.render_from=context")

        def reordered(order: Tensor) -> Tensor:  # order: (B, V) view indices, the new context first
            return render(gather_views(original, order), gather_cameras(cams, order))

        return render_from_farthest(reordered, batch["frame_idx"], vc, original)

    @torch.no_grad()
    def labels(self, static_renders: Tensor | None, batch: dict, cfg,
               feats: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """-> mask labels (B, V, 1, H, W) and validity (B, V) for every view. Targets get pseudo-masks (when on)
        united with their paste masks, supervised when reliable or pasted. With pseudo-labels on, context views are
        not supervised: their own transients cannot be pseudo-labelled (the render reproduces them), so a paste mask
        is not their whole motion and would teach those transients as static (measured: benchmarks/RESULTS.md v0.7);
        unless ``static_renders`` hold every view (``pseudolabel.render_from=farthest``: each rendered from other
        views), then every view is labelled like a target.
        With copy-paste alone (meant for static scenes, where the paste mask is the whole motion) every view counts.
        Scenes known to be static (``static_scene``, from ``data.static_root``) are labelled by their paste masks
        alone (nothing else moves there), in every view."""
        from ..pseudolabel.constructor import pseudo_masks_for_batch

        images = batch["images"]
        vc = cfg.model.num_context_views
        b, v, _, h, w = images.shape
        # the first view with a pseudo-label: the first target, or view 0 when every view has a render
        first = 0 if static_renders is not None and static_renders.shape[1] == v else vc
        labels = images.new_zeros(b, v, 1, h, w)
        valid = torch.zeros(b, v, dtype=torch.bool, device=images.device)
        paste = batch.get("paste_masks")
        static = batch.get("static_scene")  # (B,) bool: scenes known to be static (data.static_root)
        static = None if static is None else static.to(valid.device).bool()
        if cfg.model.use_dinov3_pseudolabel:
            # only scenes that may move get pseudo-masks: a static scene's labels are its paste masks alone (below),
            # and the constructor (clustering, GrabCut) is seeded per scene, so the others' do not depend on the subset
            rows = torch.arange(b, device=valid.device) if static is None else (~static).nonzero().squeeze(1)
            if len(rows):
                masks, reliable = pseudo_masks_for_batch(
                    static_renders[rows], images[rows, first:], self.semantic, cfg,
                    target_feats=None if feats is None else feats[rows, first:])
                labels[rows, first:] = masks.to(labels)
                valid[rows, first:] = reliable.to(valid.device)
        if paste is not None:
            labels = torch.maximum(labels, paste.to(labels))
            pasted = paste.flatten(2).amax(-1) > 0  # (B, V)
            if cfg.model.use_dinov3_pseudolabel:
                valid[:, first:] = valid[:, first:] | pasted[:, first:].to(valid.device)
            else:  # copy-paste is the only supervision: every view with a known paste mask is labelled
                valid = torch.ones_like(valid)
        if static is not None:  # nothing else moves there: every view is supervised, context ones too
            valid = valid | static[:, None]
        return labels, valid

    def mask_loss(self, out: dict) -> tuple[Tensor, dict[str, Tensor]]:
        bce, logs = mask_bce_loss(out["motion_logits"], out["mask_labels"], out["mask_valid"], self.pos_weight)
        return self.mask_weight * bce, logs


class Stage2MotionMask(MotionStageBase):
    number = 2

    def setup(self, cfg, device: torch.device, log: Callable[[str], None]) -> None:
        super().setup(cfg, device, log)
        if cfg.model.use_dinov3_pseudolabel and cfg.pseudolabel.stage1_checkpoint:
            self.load_labeller(cfg.pseudolabel.stage1_checkpoint, cfg, device, log)

    def forward(self, model: nn.Module, batch: dict, cfg) -> dict:
        vc, original, cams, images, paste, feats = self.inputs(batch, cfg)
        # the model's own renders are the labels' when nothing was pasted, masked or reordered and no other model
        # labels (pseudolabel.stage1_checkpoint)
        plain = (not cfg.pseudolabel.mask_context and cfg.pseudolabel.render_from == "context"
                 and self.static_model is None)
        out = model(images, vc, semantic_feats=feats, motion_all_views=True, apply_mae=False,
                    render_targets=paste is None and plain, cameras=cams)
        static_renders = None
        if cfg.model.use_dinov3_pseudolabel:
            if paste is None and plain:
                static_renders = out["renders"].detach()
            else:
                labeller = model if self.static_model is None else self.static_model
                labeller_cams = self.labeller_cameras(batch, cams)
                static_renders = self.labeller_renders(labeller, original, labeller_cams, batch, cfg)
        labelled = dict(batch, images=images, paste_masks=paste) if paste is not None else batch
        out["mask_labels"], out["mask_valid"] = self.labels(static_renders, labelled, cfg, feats)
        return out

    def compute_losses(self, batch: dict, out: dict, cfg) -> tuple[Tensor, dict[str, Tensor]]:
        return self.mask_loss(out)
