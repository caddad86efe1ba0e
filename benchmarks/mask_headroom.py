"""Masking headroom on the synthetic dynamic test set (a benchmark, not a test): prints JSON lines + a table.

    .venv/bin/python benchmarks/mask_headroom.py MODEL [MODEL ...] [--max-scenes N] [--out DIR] [--mix A ...]
        [key=value ...]
    (or: wildrayzer bench headroom ...)

MODEL is a run dir, checkpoint or pretrained dir. For each, static-region PSNR on the same targets with the context
views as given (no masking), masked by the model's own motion masks, masked by the ground-truth masks, and replaced by
transient-free renders (see :mod:`wildrayzer.infer.headroom`). The last minus the first is what transients cost the
model, i.e. the most any mask estimator can win for it. ``--mix A ...`` adds, per weight A, the static-region PSNR
with the masks ``A * GT + (1 - A) * own`` and their pooled IoU: how good masks must be before masking pays.
Config: ``configs/tiny/wildrayzer_inference.yaml`` plus the overrides (its ``data.root`` must be a synthetic dynamic
set). Results: ``<out>/headroom.json`` and ``headroom.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import check_model_overrides, fmt, machine, models_and_overrides, models_parser, write_results  # noqa: E402

LABELS = {"as_given": "as given", "own_masks": "own masks", "gt_masks": "GT masks",
          "transient_free": "transient-free context"}


def _pm(pair) -> str:
    """(mean, standard error) -> "+0.32 ± 0.19"; None -> "n/a"."""
    return "n/a" if pair is None else f"{pair[0]:+.2f} ± {pair[1]:.2f}"


def table(rows: list[dict], mix: list[str]) -> str:
    """One row per model; ``mix``: the mixed-mask conditions, each a column "PSNR (pooled IoU)". The two differences
    against "as given" are paired over scenes, with their standard errors."""
    head = ("| model | scenes | " + " | ".join(f"static PSNR, {v}" for v in LABELS.values())
            + " | own masks - as given (dB) | headroom (dB) |" + "".join(f" {c.replace('_', ' ')}: PSNR (IoU) |"
                                                                    for c in mix))
    lines = [head, "|---|---|" + "---|" * (len(LABELS) + 2 + len(mix))]
    for r in rows:
        s, iou, d = r["psnr_static"], r["mask_iou_pooled"], r["paired_vs_as_given"]
        lines.append(f"| {r['model']} | {r['scenes']} | " + " | ".join(fmt(s.get(k), 2) for k in LABELS)
                     + f" | {_pm(d['own_masks'])} | {_pm(d['transient_free'])} |"
                     + "".join(f" {fmt(s.get(c), 2)} ({fmt(iou.get(c), 3)}) |" for c in mix))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = models_parser(__doc__.splitlines()[0], "experiments/headroom")
    p.add_argument("--mix", type=float, nargs="+", default=[], metavar="A",
                   help="also mask with A * GT + (1 - A) * own masks (models with a motion estimator)")
    args, models, overrides = models_and_overrides(p, argv)

    from wildrayzer.config import load_config
    from wildrayzer.data import build_dataset
    from wildrayzer.infer.headroom import masking_headroom, mix_condition, paired_difference
    from wildrayzer.infer.pipeline import Pipeline

    dataset = build_dataset(load_config("configs/tiny/wildrayzer_inference.yaml", overrides), "eval")
    rows, mix = [], list(dict.fromkeys(mix_condition(a) for a in args.mix))
    for m in models:
        pipe = Pipeline.load(m, device="cpu")
        check_model_overrides(pipe, m, overrides)
        # mixing needs the model's own masks: a model without a motion estimator (stage 1) gets n/a there
        own = tuple(args.mix) if pipe.model.motion is not None else ()
        summary = masking_headroom(pipe, dataset, args.max_scenes, mix=own)
        row = {"model": m, "scenes": summary["as_given"]["num_scenes"],
               **{key: {c: summary[c]["mean"].get(key) if c in summary else None for c in [*LABELS, *mix]}
                  for key in ("psnr_static", "psnr_clean", "mask_iou_pooled")},
               "paired_vs_as_given": {c: paired_difference(summary, c) for c in ("own_masks", "transient_free")}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_results(Path(args.out), "headroom", {"machine": machine(), "overrides": overrides, "rows": rows},
                  table(rows, mix))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with torch.no_grad():  # not a global switch: `wildrayzer bench` runs this in the caller's process
        sys.exit(main())
