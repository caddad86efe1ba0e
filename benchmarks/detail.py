"""What limits a renderer: geometry or the detail it keeps (a benchmark, not a test): prints JSON lines + a table.

    .venv/bin/python benchmarks/detail.py MODEL [MODEL ...] [--max-scenes N] [--out DIR] [key=value ...]
    (or: wildrayzer bench detail ...)

MODEL is a run dir, checkpoint or pretrained dir. For each: novel-view PSNR, the context views re-rendered from the
scene latents, the novel views compared one colour per token, and two oracles that paint each block of the targets
with its true mean colour (blocks of a patch, of half a patch), beside copy-nearest (see
:mod:`wildrayzer.infer.detail`). Data: the static test of ``configs/tiny/wildrayzer_stage1_pretrain.yaml``
(``data.split=test``) plus the overrides, e.g. ``data.root=DIR`` for a larger generated test set. Results:
``<out>/detail.json`` and ``detail.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import check_model_overrides, fmt, machine, models_and_overrides, models_parser, write_results  # noqa: E402

COLUMNS = [("target", "novel views"), ("context", "context re-rendered"), ("target_coarse", "novel views, per token"),
           ("patch_means", "oracle: token mean colours"), ("half_patch_means", "oracle: half-token means"),
           ("copy_nearest", "copy-nearest")]


def table(rows: list[dict]) -> str:
    head = "| model | scenes | " + " | ".join(f"{c[1]} (dB)" for c in COLUMNS) + " |"
    lines = [head, "|---|---|" + "---|" * len(COLUMNS)]
    lines += [f"| {r['model']} | {r['scenes']} | " + " | ".join(fmt(r['psnr'].get(k), 2) for k, _ in COLUMNS) + " |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = models_parser(__doc__.splitlines()[0], "experiments/detail")
    args, models, overrides = models_and_overrides(p, argv)

    from wildrayzer.commands.schedule import TINY
    from wildrayzer.config import load_config
    from wildrayzer.data import build_dataset
    from wildrayzer.infer.detail import detail_scores
    from wildrayzer.infer.pipeline import Pipeline

    dataset = build_dataset(load_config(TINY[1], ["data.split=test", *overrides]), "eval")
    rows = []
    for m in models:
        pipe = Pipeline.load(m, device="cpu")
        check_model_overrides(pipe, m, overrides)
        summary = detail_scores(pipe, dataset, args.max_scenes)
        row = {"model": m, "scenes": summary["num_scenes"], "psnr": summary["mean"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_results(Path(args.out), "detail", {"machine": machine(), "overrides": overrides, "rows": rows}, table(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with torch.no_grad():  # not a global switch: `wildrayzer bench` runs this in the caller's process
        sys.exit(main())
