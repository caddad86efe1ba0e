"""The documented CPU training schedule: stages 1 -> 2 -> 3 of the tiny configs on the embedded synthetic data.

``wildrayzer schedule --out experiments/tiny [--steps S1 S2 S3] [--train-scenes N] [--views 2] [--label-rounds R]
[--export DIR] [--stage-override STAGE[:ROUND] key=value ...] [key=value ...]`` trains
the three stages in one process, each initialised from the previous one, resumable (re-running continues where a
run stopped and skips finished stages), then optionally exports the last stage-3 model as a pretrained directory
(``model.safetensors`` + ``config.yaml``) for ``WildRayZer.from_pretrained`` and the inference config.

``--label-rounds R`` (default 1) repeats stages 2 and 3 R - 1 more times (``stage2_round2``, ``stage3_round2``, ...),
each from the previous stage 3, with ``pseudolabel.mask_context=true``: the labeller's renderer, now trained with token
masking, drops the context tokens its motion head flags, so the context transients leave fewer ghosts in the labels.

``--stage1-from CKPT`` skips stage 1 and starts the first stage 2 from CKPT (a run directory or a pretrained
directory whose model has no motion head, e.g. a stage 1 trained elsewhere or ``tools/posed_to_selfsup.sh``'s joint
run); S1 of ``--steps`` is then unused.

``--train-scenes N`` trains on ``data/synthetic_N`` (N static + N dynamic training scenes, generated if absent; its
test scenes are identical to the default set's, since every scene depends only on the seed, split and index).
The default set's 32 training scenes are enough for tests and quickstart, but a model trained on them memorises
the scenes instead of learning to render new ones.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import UserError

TINY = {1: "configs/tiny/wildrayzer_stage1_pretrain.yaml", 2: "configs/tiny/wildrayzer_stage2_motion_mask.yaml",
        3: "configs/tiny/wildrayzer_stage3_joint_copy_paste.yaml"}
DEFAULT_STEPS = (2500, 300, 600)
DATA_DIRS = {1: "re10k_processed_v2", 2: "dynamic_re10k", 3: "dynamic_re10k"}
RUN_NAMES = {1: "stage1", 2: "stage2", 3: "stage3"}


def view_overrides(views: int) -> list[str]:
    """Context-view count other than the published 2: the 2-view evaluation index does not apply."""
    if views == 2:
        return []
    return [f"model.num_context_views={views}", "data.view_idx_file="]


def run_name(stage: int, label_round: int = 1) -> str:
    """Run directory name of a stage in a labelling round: stage2, stage3, then stage2_round2, stage3_round2, ..."""
    return RUN_NAMES[stage] if label_round == 1 else f"{RUN_NAMES[stage]}_round{label_round}"


def _previous(stage: int, label_round: int) -> tuple[int, int]:
    """The (stage, round) a stage starts from: stage 2 of round r > 1 continues the stage 3 of round r - 1."""
    if stage == 2 and label_round > 1:
        return 3, label_round - 1
    return stage - 1, 1 if stage == 2 else label_round


def check_label_rounds(label_rounds: int, stages: tuple[int, ...] = (1, 2, 3)) -> None:
    """A later labelling round repeats stages 2 and 3 from the last stage 3: at least one round, both stages."""
    if label_rounds < 1:
        raise UserError(f"--label-rounds must be at least 1, got {label_rounds}")
    if label_rounds > 1 and not {2, 3} <= set(stages):
        raise UserError("--label-rounds > 1 repeats stages 2 and 3: train both")


def stage_config(stage: int, out: Path, steps: int, extra: list[str], data_root: str = "", label_round: int = 1,
                 stage1_from: str = ""):
    from ..config import load_config

    overrides = [f"training.output_dir={out}", f"training.run_name={run_name(stage, label_round)}",
                 f"training.max_steps={steps}"]
    if data_root:  # the generated set's own scenes and copy-paste cut-outs
        coco = Path(data_root) / "coco"
        overrides += [f"data.root={Path(data_root) / DATA_DIRS[stage]}", f"copy_paste.image_dir={coco / 'images'}",
                      f"copy_paste.annotation_file={coco / 'annotations/instances_synthetic.json'}"]
    if stage > 1:
        previous = _previous(stage, label_round)
        source = stage1_from if previous == (1, 1) and stage1_from else out / run_name(*previous)
        overrides.append(f"training.init_from={source}")
    if label_round > 1:
        overrides.append("pseudolabel.mask_context=true")
    return load_config(TINY[stage], overrides + list(extra))


def parse_stage_key(text: str) -> tuple[int, int | None]:
    """``--stage-override`` target: "S" (stage S in every labelling round) or "S:R" (stage S of round R only)."""
    stage, _, rnd = text.partition(":")
    if stage not in ("1", "2", "3") or (rnd and (not rnd.isdigit() or int(rnd) < 1 or (stage == "1" and rnd != "1"))):
        raise UserError(f"--stage-override: expected STAGE or STAGE:ROUND (stage 1, 2 or 3; round >= 1, stage 1 "
                        f"has round 1 only), got '{text}'")
    return int(stage), int(rnd) if rnd else None


def run_schedule(out: str | Path, steps: tuple[int, int, int] = DEFAULT_STEPS, extra: list[str] | None = None,
                 stages: tuple[int, ...] = (1, 2, 3), log=print, data_root: str = "",
                 per_stage: dict | None = None, label_rounds: int = 1, stage1_from: str = "") -> dict[int, Path]:
    """Train the given stages in order, then stages 2 and 3 again for each further labelling round; returns
    {stage: run dir of its last round}. Finished stages return at once (resume). ``extra`` applies to every stage,
    ``per_stage[s]`` (applied after it) to stage ``s`` in every round, then ``per_stage[(s, r)]`` to stage ``s`` of
    round ``r`` only. ``stage1_from``: a checkpoint the first stage 2 starts from, stage 1 is then not trained."""
    from ..train.loop import train

    check_label_rounds(label_rounds, stages)
    out = Path(out)
    dirs = {}
    if stage1_from:
        stages = tuple(s for s in stages if s != 1)
    plan = [(s, 1) for s in stages] + [(s, r) for r in range(2, label_rounds + 1) for s in (2, 3)]
    for stage, label_round in plan:
        own = list((per_stage or {}).get(stage, [])) + list((per_stage or {}).get((stage, label_round), []))
        cfg = stage_config(stage, out, steps[stage - 1], list(extra or []) + own, data_root, label_round, stage1_from)
        t0 = time.time()
        res = train(cfg)
        dirs[stage] = Path(res["run_dir"])
        log(f"stage {stage}{'' if label_round == 1 else f' (labelling round {label_round})'}: step {res['step']} "
            f"in {time.time() - t0:.0f} s -> {res['checkpoint']}")
    return dirs


def ensure_training_data(train_scenes: int, progress: bool = False) -> str:
    """``--train-scenes N``: generate ``data/synthetic_N`` (N static + N dynamic training scenes) unless complete and
    return it as the schedule's data root; 0 -> "" (the stage configs' own data roots)."""
    if not train_scenes:
        return ""
    from ..data.synthetic import SynthParams, ensure_default_data

    root = f"data/synthetic_{train_scenes}"
    ensure_default_data(root, SynthParams(static_train=train_scenes, dynamic_train=train_scenes), progress=progress)
    return root


def export_pretrained(run_dir: Path, dest: Path) -> Path:
    """Copy a run's latest weights into a pretrained directory (``model.safetensors`` + ``config.yaml``)."""
    from ..weights import load_model_checkpoint, save_pretrained

    loaded = load_model_checkpoint(run_dir)
    return save_pretrained(loaded.model, loaded.config, dest, step=int(loaded.metadata.get("step", 0)),
                           semantic_dim=int(loaded.metadata.get("semantic_dim", "0")))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="wildrayzer schedule", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="experiments/tiny", help="folder for the three run directories")
    p.add_argument("--steps", type=int, nargs=3, default=list(DEFAULT_STEPS), metavar=("S1", "S2", "S3"))
    p.add_argument("--views", type=int, default=2, help="context views (targets stay 6)")
    p.add_argument("--train-scenes", type=int, default=0,
                   help="train on data/synthetic_N with N static + N dynamic scenes (0: the default data/synthetic)")
    p.add_argument("--label-rounds", type=int, default=1,
                   help="repeat stages 2-3 with pseudolabel.mask_context=true this many times in all (default 1)")
    p.add_argument("--stage1-from", default="", metavar="CKPT",
                   help="skip stage 1: the first stage 2 starts from this checkpoint (run or pretrained directory)")
    p.add_argument("--export", default="", help="write the last stage-3 model here as a pretrained directory")
    p.add_argument("--stage-override", nargs=2, action="append", default=[], metavar=("STAGE[:ROUND]", "KEY=VALUE"),
                   help="an override for one stage only, e.g. --stage-override 1 training.batch_size=8, or for one "
                        "stage of one labelling round, e.g. --stage-override 2:2 training.max_steps=900 (repeatable)")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every stage")
    args = p.parse_args(argv)
    if any(s < 1 for s in args.steps):
        raise UserError("--steps must be positive")
    check_label_rounds(args.label_rounds)  # before any data is generated
    if args.stage1_from and not Path(args.stage1_from).exists():
        raise UserError(f"--stage1-from: checkpoint not found: {args.stage1_from}")
    if args.stage1_from and any(parse_stage_key(t)[0] == 1 for t, _ in args.stage_override):
        raise UserError("--stage1-from skips stage 1: a --stage-override 1 would not apply")
    per_stage: dict = {}
    for target, item in args.stage_override:
        stage, rnd = parse_stage_key(target)
        if rnd is not None and rnd > args.label_rounds:
            raise UserError(f"--stage-override {target}: there is no labelling round {rnd} (--label-rounds "
                            f"{args.label_rounds})")
        per_stage.setdefault(stage if rnd is None else (stage, rnd), []).append(item)
    from ..data.synthetic import ensure_default_data

    data_root = ensure_training_data(args.train_scenes, progress=True)
    if not data_root:
        ensure_default_data("data/synthetic")
    dirs = run_schedule(args.out, tuple(args.steps), view_overrides(args.views) + args.overrides, data_root=data_root,
                        per_stage=per_stage, label_rounds=args.label_rounds, stage1_from=args.stage1_from)
    if args.export:
        print(f"exported {export_pretrained(dirs[3], Path(args.export))}")
    return 0
