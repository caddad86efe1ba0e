"""What camera estimators have learned of the geometry (a benchmark, not a test): prints JSON lines + a table.

    .venv/bin/python benchmarks/pose_probe.py MODEL [MODEL ...] [--max-scenes N] [--out DIR] [--turn DEG]
        [--step X] [--no-sensitivity] [key=value ...]
    (or: wildrayzer bench poses ...)

MODEL is a run dir, checkpoint or pretrained dir. For each: the rotation error against identity's, the correlation
and sign agreement of predicted and true yaw, the predicted rotations' size against the true ones, how well the
predicted cameras order the targets between the context views (by their step along the context baseline, and by
their turn), and how much the renderer reacts to a turned or stepped target camera, or to every target given the
first context view's camera (see :mod:`wildrayzer.infer.pose_probe`). Data: the static test of
``configs/tiny/wildrayzer_stage1_pretrain.yaml`` (``data.split=test``) plus the overrides, e.g. ``data.root=DIR``
for a larger generated test set. Results: ``<out>/poses.json`` and ``poses.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import check_model_overrides, fmt, machine, models_and_overrides, models_parser, write_results  # noqa: E402

COLUMNS = [("rotation_error_deg", "rot err (deg)", 2), ("identity_rotation_error_deg", "identity (deg)", 2),
           ("yaw_corr", "yaw corr", 2), ("yaw_sign_agreement", "yaw sign agrees", 2),
           ("rotation_size_ratio", "pred/true angle", 2), ("progress_step_rank_corr", "order by step", 2),
           ("progress_turn_rank_corr", "order by turn", 2),
           ("order_follows_image", "reversed: follows image", 2), ("order_follows_slot", "reversed: follows slot", 2),
           ("turn_change", "turn: change (0-255)", 1),
           ("turn_psnr_drop", "turn: dB lost", 2), ("step_change", "step: change (0-255)", 1),
           ("step_psnr_drop", "step: dB lost", 2), ("first_view_psnr_drop", "targets at 1st view: dB lost", 2)]


def table(rows: list[dict]) -> str:
    head = "| model | scenes | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|---|---|" + "---|" * len(COLUMNS)]
    lines += [f"| {r['model']} | {r['scenes']} | " + " | ".join(fmt(r.get(k), d) for k, _, d in COLUMNS) + " |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = models_parser(__doc__.splitlines()[0], "experiments/poses")
    p.add_argument("--turn", type=float, default=10.0, help="degrees the target cameras turn (sensitivity)")
    p.add_argument("--step", type=float, default=0.25, help="context baselines the target cameras step (sensitivity)")
    p.add_argument("--no-sensitivity", action="store_true", help="skip the renderer-sensitivity renders")
    args, models, overrides = models_and_overrides(p, argv)

    from wildrayzer.commands.schedule import TINY
    from wildrayzer.config import load_config
    from wildrayzer.data import build_dataset
    from wildrayzer.infer.pipeline import Pipeline
    from wildrayzer.infer.pose_probe import pose_probe

    dataset = build_dataset(load_config(TINY[1], ["data.split=test", *overrides]), "eval")
    rows = []
    for m in models:
        pipe = Pipeline.load(m, device="cpu")
        check_model_overrides(pipe, m, overrides)
        row = {"model": m, **pose_probe(pipe, dataset, args.max_scenes, turn_deg=args.turn, step=args.step,
                                        sensitivity=not args.no_sensitivity)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_results(Path(args.out), "poses", {"machine": machine(), "overrides": overrides, "turn_deg": args.turn,
                                            "step": args.step, "rows": rows}, table(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with torch.no_grad():  # not a global switch: `wildrayzer bench` runs this in the caller's process
        sys.exit(main())
