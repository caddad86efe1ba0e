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


def models_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """The parser of a benchmark over models: MODEL ... [key=value ...], --max-scenes, --out; add options to it and
    read it with :func:`models_and_overrides`."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("models", nargs="+", help="run dirs, checkpoints or pretrained dirs; then key=value overrides")
    p.add_argument("--max-scenes", type=int, default=0)
    p.add_argument("--out", default=default_out)
    return p


def models_and_overrides(p: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str],
                                                                                      list[str]]:
    """-> (args, models, config overrides); the overrides may come before or after the options."""
    args = p.parse_intermixed_args(argv)
    return args, [m for m in args.models if "=" not in m], [m for m in args.models if "=" in m]


def check_model_overrides(pipe, model: str, overrides: list[str]) -> None:
    """A benchmark over saved models applies its overrides to the evaluated data; a ``model.*`` override that differs
    from the loaded model's own value would be silently ignored: refuse it (UserError, one line)."""
    from omegaconf import Container, OmegaConf

    from wildrayzer.errors import UserError

    def plain(v):
        return OmegaConf.to_container(v) if isinstance(v, Container) else v

    for item in overrides:
        key = item.partition("=")[0]
        if not key.startswith("model."):
            continue
        own = plain(OmegaConf.select(pipe.config, key, default=None))
        if own is not None and plain(OmegaConf.select(OmegaConf.from_dotlist([item]), key)) != own:
            raise UserError(f"{item}: {model} has {key}={own}; a benchmark evaluates each model as saved (its "
                            "overrides only choose the data), so this override would be ignored")


def fmt(v, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table(rows: list[dict]) -> str:
    head = "| model | split | " + " | ".join(c[1] for c in COLUMNS) + " |"
    sep = "|---|---|" + "---|" * len(COLUMNS)
    body = [f"| {r['model']} | {r['split']} | " + " | ".join(fmt(r["metrics"].get(k), d) for k, _, d in COLUMNS) + " |"
            for r in rows]
    return "\n".join([head, sep, *body])


def evaluate_rows(dirs: dict, views: int, max_scenes: int, full_only: bool, posed: Path | None = None) -> list[dict]:
    """Every row of the table for one context-view count: baselines (mean colour, copy-nearest), the posed model
    (``posed``: a stage-1 run trained with ``model.cameras=given``; skipped when None), stages 1-3, on the dynamic
    and the static test. On the static test every pixel is static: its PSNR/SSIM fill the static columns."""
    from wildrayzer.commands.schedule import TINY, view_overrides
    from wildrayzer.config import load_config
    from wildrayzer.data import build_dataset
    from wildrayzer.infer.evaluate import evaluate
    from wildrayzer.infer.pipeline import Pipeline

    vo = view_overrides(views)
    splits = {"dynamic test": build_dataset(load_config("configs/tiny/wildrayzer_inference.yaml", vo), "eval"),
              "static test": build_dataset(load_config(TINY[1], ["data.split=test", *vo]), "eval")}
    rows = []

    def add(name: str, split: str, pipe=None, baseline: str = "", mae: bool | None = None) -> None:
        summary = evaluate(splits[split], views, pipe=pipe, baseline=baseline, max_scenes=max_scenes,
                           progress=False, apply_mae=mae)
        metrics = dict(summary["mean"])
        if split == "static test":
            metrics.update(psnr_static=metrics.get("psnr"), ssim_static=metrics.get("ssim"))
        row = {"model": name, "views": views, "split": split, "metrics": metrics, "scenes": summary["num_scenes"]}
        rows.append(row)
        print(json.dumps(row), flush=True)

    if full_only:
        add(f"full WildRayZer ({views} views)", "dynamic test", Pipeline.load(dirs[3], device="cpu"))
        return rows
    s1, s2, s3 = (Pipeline.load(dirs[s], device="cpu") for s in (1, 2, 3))
    for split in splits:
        add("mean colour / identity poses", split, baseline="mean_colour")
        add("copy nearest context view / identity poses", split, baseline="copy_nearest")
        if posed is not None:
            add("posed stage 1 (dataset cameras, LVSM-style)", split, Pipeline.load(posed, device="cpu"))
        add("stage 1 RayZer (no masks)", split, s1)
        add("+ motion estimator (stage 2)", split, s2, mae=False)
        add("+ MAE masking (stage 2 masks, no retraining)", split, s2, mae=True)
        add("full WildRayZer (stage 3 + copy-paste)", split, s3)
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
    p.add_argument("--posed-steps", type=int, default=0,
                   help="also train (or with --skip-train: evaluate) a posed stage 1 (model.cameras=given) for the "
                        "first view count, with the stage-1 settings and this many steps (0: no posed row)")
    p.add_argument("--label-rounds", type=int, default=1,
                   help="labelling rounds of stages 2-3 (wildrayzer schedule --label-rounds); the last is evaluated")
    for name, what in (("stage1", "stage 1"), ("stage2", "stage 2 (the stage-2 rows)"),
                       ("stage3", "the full model"), ("posed", "a posed stage 1 (the posed row)")):
        p.add_argument(f"--{name}", metavar="PATH", help=f"evaluate this model as {what} instead of a run under "
                       "--out (run dir, checkpoint or pretrained dir); --stage1/2/3 go together and train nothing")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every stage")
    args = p.parse_args(argv)
    given = {s: getattr(args, f"stage{s}") for s in (1, 2, 3)}
    named = all(given.values())  # the rows' models are named: nothing is trained, no run under --out is read
    if any(given.values()) or args.posed:
        if not named:
            p.error("--stage1, --stage2 and --stage3 go together (--posed is optional beside them)")
        if len(args.views) != 1:
            p.error("--stage1/2/3 name the models of one context-view count: give one --views")
        for name in ("stage1", "stage2", "stage3", "posed"):
            path = getattr(args, name)
            if path and not Path(path).exists():
                p.error(f"--{name} {path}: no such file or directory")

    from wildrayzer.commands.schedule import (
        DEFAULT_STEPS,
        RUN_NAMES,
        ensure_training_data,
        run_name,
        run_schedule,
        view_overrides,
    )
    from wildrayzer.data.synthetic import ensure_default_data

    steps = tuple(args.steps or DEFAULT_STEPS)
    ensure_default_data("data/synthetic")  # its test scenes are the evaluation set
    data_root = ensure_training_data(args.train_scenes)
    out = Path(args.out)
    rows, timings, models = [], {}, {}  # models: per view count, the files each row was evaluated with
    for views in args.views:
        vdir = out / f"views{views}"
        t0 = time.time()
        if named:
            dirs = {s: Path(v) for s, v in given.items()}
        elif args.skip_train:
            dirs = {1: vdir / RUN_NAMES[1], 3: vdir / run_name(3, args.label_rounds)}
        else:
            dirs = run_schedule(vdir, steps, view_overrides(views) + args.overrides, data_root=data_root,
                                log=lambda m: print(m, file=sys.stderr, flush=True), label_rounds=args.label_rounds)
        # The stage-2 rows are stage 1 plus a mask head, as they say: the first round's stage 2 (a later round's
        # starts from a stage 3). The full-model row is the last round's stage 3.
        if not named:
            dirs[2] = vdir / RUN_NAMES[2]
        posed = Path(args.posed) if args.posed else None
        if posed is None and args.posed_steps and views == args.views[0]:
            posed = vdir / "posed" / RUN_NAMES[1]
            if not args.skip_train:
                run_schedule(vdir / "posed", (args.posed_steps, 0, 0), view_overrides(views) + args.overrides
                             + ["model.cameras=given"], stages=(1,), data_root=data_root,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
        timings[views] = time.time() - t0
        models[views] = {f"stage{s}": str(dirs[s]) for s in (1, 2, 3)} | ({"posed": str(posed)} if posed else {})
        with torch.no_grad():
            rows += evaluate_rows(dirs, views, args.max_scenes, full_only=views != args.views[0], posed=posed)
    training = {"steps": steps, "posed_steps": args.posed_steps or None, "train_scenes": args.train_scenes or None,
                "label_rounds": args.label_rounds, "overrides": args.overrides,
                "train_seconds": timings}
    if args.skip_train or named:  # nothing was trained here: the runs' own configs say how they were
        training = dict.fromkeys(training)
    write_results(out, "quality", {"machine": machine(), **training, "models": models, "rows": rows}, table(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
