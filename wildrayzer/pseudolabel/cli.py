"""``wildrayzer pseudolabel --config FILE [--out DIR] [key=value ...]``: export pseudo-motion masks to inspect them.

For every scene of ``build_dataset(cfg, "eval")`` (set ``data.split`` to the split you train on): render the target
views with the frozen stage-1 model (``pseudolabel.stage1_checkpoint``), compute semantic features (cached per image
under ``semantic.cache_dir`` when set), run the constructor (:mod:`wildrayzer.pseudolabel.constructor`) and write masks
+ a JSON with reliability to ``--out`` (default ``experiments/pseudolabels``; :mod:`wildrayzer.pseudolabel.cache`).
Scenes already written with the same settings are skipped, so an interrupted run resumes. When the dataset has
ground-truth motion masks, the summary reports the masks' IoU against them. Training does not read these files: stages
2 and 3 compute their pseudo-labels in the loop, from the model being trained against.

``--renders clean`` replaces the stage-1 renders by the dataset's transient-free ``clean_images`` (synthetic data
only): a diagnostic that measures the constructor alone, with perfect static renders.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ConfigError, DataError

# dataset item -> target renders (T, 3, H, W) in [0, 1], or renders of every view (V, 3, H, W) with
# pseudolabel.render_from=farthest (every view rendered from the views farthest from it in time; all labelled)
RenderFn = Callable[[dict], Tensor]


def _clean_images(item: dict, option: str) -> Tensor:
    """The item's transient-free views (V, 3, H, W), which the ``--renders`` diagnostics need."""
    if "clean_images" not in item:
        raise DataError(f"--renders {option} needs a dataset with clean_images/ (the embedded synthetic data)")
    return item["clean_images"]


def stage1_renderer(cfg, device: torch.device, clean_context: bool = False) -> RenderFn:
    """The frozen stage-1 model as a renderer of an item's target views (context = first num_context_views).

    ``clean_context`` (a diagnostic): the context views are replaced by the dataset's transient-free
    ``clean_images`` (the targets stay as given), which separates what the labeller loses to transients carried in
    from the context from what it loses to blur (benchmarks/RESULTS.md v2.2)."""
    from ..infer.pipeline import item_cameras
    from ..weights import check_arch, load_model_checkpoint
    from .far_context import gather_cameras, gather_views, render_from_farthest

    path = str(cfg.pseudolabel.stage1_checkpoint)
    if not path:
        raise ConfigError("pseudolabel.stage1_checkpoint is empty: point it to the stage-1 run directory or "
                          "weights file (e.g. pseudolabel.stage1_checkpoint=experiments/wildrayzer_stage1_pretrain)")
    loaded = load_model_checkpoint(path)
    stored = loaded.config.model
    check_arch(cfg.model, stored, f"stage-1 checkpoint {loaded.path}", ("image_size", "num_context_views",
                                                                          "num_target_views"))
    model = loaded.model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # A stage-2/3 checkpoint renders as the static model, like stage 3's labeller: no motion head, no token masking.
    model.motion = None
    num_context = int(stored.num_context_views)

    farthest = cfg.pseudolabel.render_from == "farthest"
    if farthest and clean_context:
        raise ConfigError("--renders clean-context replaces the context views, which pseudolabel.render_from=farthest "
                          "does not use as such; set pseudolabel.render_from=context")

    @torch.no_grad()
    def render(item: dict) -> Tensor:
        images = item["images"][None].to(device)
        if clean_context:
            images = torch.cat([_clean_images(item, "clean-context")[:num_context].to(device)[None],
                                images[:, num_context:]], dim=1)
        cameras = item_cameras(model, item, device)

        def run(imgs: Tensor, cams: dict | None) -> Tensor:
            return model(imgs, num_context, cameras=cams, apply_mae=False)["renders"]

        if farthest:  # every view from its farthest views
            out = render_from_farthest(lambda order: run(gather_views(images, order), gather_cameras(cameras, order)),
                                       item["frame_idx"][None], num_context, images)
        else:  # the targets from the context views
            out = run(images, cameras)
        return out[0].float().clamp(0, 1).cpu()

    render.source = (str(loaded.path) + ("+clean-context" if clean_context else "")  # type: ignore[attr-defined]
                     + ("+farthest" if farthest else ""))
    return render


def clean_renderer(cfg) -> RenderFn:
    num_context = int(cfg.model.num_context_views)

    def render(item: dict) -> Tensor:
        return _clean_images(item, "clean")[num_context:]

    render.source = "clean"  # type: ignore[attr-defined]
    return render


def label_dataset(cfg, dataset, render: RenderFn, backbone, out_dir: str | Path, max_scenes: int = 0,
                  progress: bool = True) -> dict:
    """Label every scene of ``dataset`` not yet cached -> summary dict (counts, timing, IoU vs GT when present)."""
    from tqdm import tqdm

    from ..infer.metrics import mask_iou_pooled
    from ..semantic import FeatureCache
    from .cache import PseudoLabelCache, fingerprint
    from .constructor import build_pseudo_masks, needs_render_features

    def mask_iou(pred: Tensor, gt: Tensor) -> float:  # 1.0 when nothing moves and nothing is predicted
        iou = mask_iou_pooled(pred, gt)
        return 1.0 if iou is None else iou

    cache = PseudoLabelCache(out_dir)
    fp = fingerprint(cfg, getattr(render, "source", "unknown"))
    features = FeatureCache(backbone, cfg.semantic.cache_dir) if cfg.semantic.cache_dir else backbone
    device = next(iter(backbone.buffers())).device
    num_context = int(cfg.model.num_context_views)
    n = len(dataset) if max_scenes <= 0 else min(len(dataset), max_scenes)
    done = skipped = frames = unreliable = 0
    ious, ious_reliable, ious_context = [], [], []
    t0 = time.perf_counter()
    for i in tqdm(range(n), desc="pseudo-labels", unit="scene", disable=not progress):
        item = dataset[i]
        scene = item["scene"]
        if cache.is_done(scene, fp):
            skipped += 1
            continue
        renders = render(item)
        first = 0 if len(renders) == len(item["images"]) else num_context  # every view labelled, or the targets
        targets = item["images"][first:]
        with torch.no_grad():
            pf = features(targets.to(device)).cpu()
            rf = features(renders.to(device)).cpu() if needs_render_features(cfg.pseudolabel) else None
        out = build_pseudo_masks(targets, renders, pf, rf, cfg, seed=cfg.training.seed)
        target_frames = item["frame_idx"][first:].tolist()
        cache.write(scene, target_frames, out.masks, {
            "reliable": out.reliable.tolist(), "psnr": [round(float(p), 3) for p in out.psnr],
            "context_frames": item["frame_idx"][:num_context].tolist(), "fingerprint": fp,
            "renders_from": getattr(render, "source", "unknown"), "dynamic_clusters": out.dynamic_clusters.tolist()})
        done += 1
        frames += len(target_frames)
        unreliable += int((~out.reliable).sum())
        if "motion_masks" in item:  # the targets' IoU (comparable between modes), the context views' apart
            gt = item["motion_masks"][first:]
            tgt = torch.arange(len(gt)) >= num_context - first
            ious.append(mask_iou(out.masks[tgt], gt[tgt]))
            if (out.reliable & tgt).any():
                ok = out.reliable & tgt
                ious_reliable.append(mask_iou(out.masks[ok], gt[ok]))
            if first == 0:
                ious_context.append(mask_iou(out.masks[~tgt], gt[~tgt]))
    seconds = time.perf_counter() - t0
    summary = {"out": str(out_dir), "scenes_labelled": done, "scenes_skipped": skipped, "frames": frames,
               "unreliable_frames": unreliable, "seconds": round(seconds, 2),
               "frames_per_s": round(frames / seconds, 2) if frames else None}
    if ious:  # IoU per scene (pooled over its target frames), averaged over scenes
        summary["gt_iou_mean"] = round(sum(ious) / len(ious), 4)
        if ious_reliable:
            summary["gt_iou_mean_reliable_frames"] = round(sum(ious_reliable) / len(ious_reliable), 4)
        if ious_context:  # pseudolabel.render_from=farthest labels the context views too
            summary["gt_iou_mean_context"] = round(sum(ious_context) / len(ious_context), 4)
    return summary


def main(argv: list[str]) -> int:
    from ..cli import config_arg_parser
    from ..config import load_config
    from ..data import build_dataset
    from ..distributed import pick_device
    from ..semantic import build_semantic_backbone

    parser = config_arg_parser("wildrayzer pseudolabel", __doc__.splitlines()[0])
    parser.add_argument("--out", default="experiments/pseudolabels", help="output directory (default: %(default)s)")
    parser.add_argument("--max-scenes", type=int, default=0, help="label at most this many scenes (0 = all)")
    parser.add_argument("--renders", choices=("stage1", "clean", "clean-context"), default="stage1",
                        help="stage1: frozen stage-1 model (default); clean: the dataset's clean_images (diagnostic); "
                             "clean-context: the stage-1 model rendering from the context's clean_images (diagnostic)")
    args = parser.parse_intermixed_args(argv)  # options may follow key=value overrides
    cfg = load_config(Path(args.config), args.overrides)
    out_dir = args.out
    if not out_dir:
        raise ConfigError("--out is empty: pass the output directory, e.g. --out experiments/pseudolabels")
    device = pick_device(cfg.training.device)
    if args.renders == "clean":
        render = clean_renderer(cfg)
    else:
        render = stage1_renderer(cfg, device, clean_context=args.renders == "clean-context")
    backbone = build_semantic_backbone(cfg.semantic).to(device)
    if backbone.out_dim == 0:
        raise ConfigError("pseudo-labels need semantic features but semantic.backbone=none; set "
                          "semantic.backbone=efficientnet_lite0 (offline) or dinov3")
    dataset = build_dataset(cfg, "eval")
    summary = label_dataset(cfg, dataset, render, backbone, out_dir, args.max_scenes, bool(cfg.logging.progress))
    print(json.dumps(summary), file=sys.stdout)
    return 0


if __name__ == "__main__":
    from ..cli import run_guarded

    sys.exit(run_guarded(main, sys.argv[1:]))
