"""How many context tokens a model's own motion masks replace by the noise token, per threshold, against the tokens
the ground-truth masks would replace (the same rule on the GT masks): a benchmark, not a test.

    .venv/bin/python benchmarks/token_masks.py RUN_OR_PRETRAINED_DIR [--data data/synthetic/dynamic_re10k]
        [--thresholds 0.05 0.1 0.2 0.3 0.5]

Prints one JSON line per threshold: fraction of context tokens masked and token IoU against the GT tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--data", default="data/synthetic/dynamic_re10k")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    args = p.parse_args(argv)

    from wildrayzer.config import load_config
    from wildrayzer.data import build_dataset
    from wildrayzer.infer.pipeline import Pipeline

    pipe = Pipeline.load(args.model, device="cpu")
    if pipe.model.motion is None:
        raise SystemExit(f"{args.model} has no motion estimator")
    ds = build_dataset(load_config("configs/tiny/wildrayzer_inference.yaml", [f"data.root={args.data}"]), "eval")
    vc, patch = pipe.num_context, pipe.model.patch
    inter, union, masked = ({t: 0 for t in args.thresholds} for _ in range(3))
    gt_total = total = 0
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            probs = pipe.run(item["images"][None, :vc])["motion_probs"][0].flatten(0, 1)  # (Vc, 1, H, W)
            pooled = F.avg_pool2d(probs.float(), patch)
            gt = F.avg_pool2d(item["motion_masks"][:vc].float(), patch) > pipe.model.mask_token_threshold
            gt_total, total = gt_total + int(gt.sum()), total + gt.numel()
            for t in args.thresholds:
                m = pooled > t
                inter[t] += int((m & gt).sum())
                union[t] += int((m | gt).sum())
                masked[t] += int(m.sum())
    for t in args.thresholds:
        print(json.dumps({"threshold": t, "masked_frac": round(masked[t] / total, 4),
                          "gt_frac": round(gt_total / total, 4), "token_iou": round(inter[t] / max(union[t], 1), 4)}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
