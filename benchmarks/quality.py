"""Quality and ablations on the embedded synthetic benchmark (a benchmark, not a test): prints JSON lines + a table.

    .venv/bin/python benchmarks/quality.py [--out experiments/quality] [--steps 3000 600 1500] [--views 2 3 4]
        [--train-scenes 192] [key=value ...]
    (or: wildrayzer bench quality ...)

Trains the documented tiny schedule (stages 1 -> 2 -> 3, resumable: re-running continues) once per context-view count,
then evaluates on the held-out dynamic test scenes (2 context -> 6 targets for views=2):

    mean-colour baseline | stage 1 RayZer | + motion estimator (stage 2) | + MAE masking | full WildRayZer (stage 3)

plus stage 1 on the held-out static scenes (novel-view PSNR vs the mean-colour baseline, poses vs identity).
Results: ``<out>/quality.json`` and ``<out>/quality.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_lib import cpu_model  # noqa: E402

COLUMNS = [("psnr", "full PSNR", 2), ("psnr_static", "static PSNR", 2), ("ssim_static", "static SSIM", 3),
           ("lpips_static", "static LPIPS", 3), ("psnr_clean", "PSNR vs clean GT", 2), ("mask_iou", "mask IoU", 3),
           ("mask_iou_pooled", "pooled IoU", 3), ("mask_recall", "mask recall", 3),
           ("pose_rot_deg", "rot err (deg)", 2), ("pose_trans_rel", "trans err (rel)", 3)]


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "device": "cpu"}


def write_results(out: Path, name: str, result: dict, md: str) -> None:
    """``<out>/<name>.json`` (the result) and ``<out>/<name>.md`` (the table), and the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    (out / f"{name}.md").write_text(md + "\n")
    print(md)


def fmt(v, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict]) -> str:
    head = "| model | split | " + " | ".join(c[1] for c in COLUMNS) + " |"
    sep = "|---|---|" + "---|" * len(COLUMNS)
    body = [f"| {r['model']} | {r['split']} | " + " | ".join(fmt(r["metrics"].get(k), d) for k, _, d in COLUMNS) + " |"
            for r in rows]
    return "\n".join([head, sep, *body])


def evaluate_rows(dirs: dict, views: int, max_scenes: int, full_only: bool) -> list[dict]:
    from wildrayzer.config import load_config
    from wildrayzer.data import build_dataset
    from wildrayzer.infer.evaluate import evaluate
    from wildrayzer.infer.pipeline import Pipeline
    from wildrayzer.schedule import TINY, view_overrides

    vo = view_overrides(views)
    dyn = build_dataset(load_config("configs/tiny/wildrayzer_inference.yaml", vo), "eval")
    rows = []

    def add(name: str, summary: dict, split: str = "dynamic test") -> None:
        row = {"model": name, "views": views, "split": split, "metrics": summary["mean"],
               "scenes": summary["num_scenes"]}
        rows.append(row)
        print(json.dumps(row), flush=True)

    if full_only:
        add(f"full WildRayZer ({views} views)", evaluate(dyn, views, pipe=Pipeline.load(dirs[3], device="cpu"),
                                                        max_scenes=max_scenes, desc="stage 3"))
        return rows
    add("mean-colour baseline", evaluate(dyn, views, baseline="mean_colour", max_scenes=max_scenes))
    add("stage 1 RayZer (no masks)", evaluate(dyn, views, pipe=Pipeline.load(dirs[1], device="cpu"),
                                              max_scenes=max_scenes, desc="stage 1"))
    s2 = Pipeline.load(dirs[2], device="cpu")
    s2.model.use_mae_masking = False
    add("+ motion estimator (stage 2)", evaluate(dyn, views, pipe=s2, max_scenes=max_scenes, desc="stage 2"))
    s2.model.use_mae_masking = True
    add("+ MAE masking (stage 2 masks, no retraining)", evaluate(dyn, views, pipe=s2, max_scenes=max_scenes,
                                                                 desc="stage 2 + MAE"))
    add("full WildRayZer (stage 3 + copy-paste)", evaluate(dyn, views, pipe=Pipeline.load(dirs[3], device="cpu"),
                                                           max_scenes=max_scenes, desc="stage 3"))
    static = build_dataset(load_config(TINY[1], ["data.split=test", *vo]), "eval")
    add("mean-colour / identity-pose baseline", evaluate(static, views, baseline="mean_colour",
                                                         max_scenes=max_scenes), "static test")
    add("stage 1 RayZer", evaluate(static, views, pipe=Pipeline.load(dirs[1], device="cpu"), max_scenes=max_scenes,
                                   desc="stage 1 static"), "static test")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="experiments/quality")
    p.add_argument("--steps", type=int, nargs=3, default=None, metavar=("S1", "S2", "S3"))
    p.add_argument("--views", type=int, nargs="+", default=[2])
    p.add_argument("--max-scenes", type=int, default=0)
    p.add_argument("--train-scenes", type=int, default=0,
                   help="train on data/synthetic_N (N static + N dynamic scenes, made if absent; same test scenes)")
    p.add_argument("--skip-train", action="store_true", help="evaluate existing runs only")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every stage")
    args = p.parse_args(argv)

    from wildrayzer.data.synthetic import ensure_default_data
    from wildrayzer.schedule import DEFAULT_STEPS, RUN_NAMES, ensure_training_data, run_schedule, view_overrides

    steps = tuple(args.steps or DEFAULT_STEPS)
    ensure_default_data("data/synthetic")  # its test scenes are the evaluation set
    data_root = ensure_training_data(args.train_scenes)
    out = Path(args.out)
    rows, timings = [], {}
    for views in args.views:
        vdir = out / f"views{views}"
        t0 = time.time()
        if args.skip_train:
            dirs = {s: vdir / RUN_NAMES[s] for s in (1, 2, 3)}
        else:
            dirs = run_schedule(vdir, steps, view_overrides(views) + args.overrides, data_root=data_root,
                                log=lambda m: print(m, file=sys.stderr, flush=True))
        timings[views] = time.time() - t0
        with torch.no_grad():
            rows += evaluate_rows(dirs, views, args.max_scenes, full_only=views != args.views[0])
    training = {"steps": steps, "train_scenes": args.train_scenes or None, "overrides": args.overrides,
                "train_seconds": timings}
    if args.skip_train:  # nothing was trained here: the runs' own configs say how they were
        training = dict.fromkeys(training)
    write_results(out, "quality", {"machine": machine(), **training, "rows": rows}, table(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
