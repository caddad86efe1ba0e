"""``wildrayzer data synth | import | check`` (also ``python -m wildrayzer.data.cli``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UserError

USAGE_EXAMPLES = """examples:
  wildrayzer data synth --out data/synthetic                    # default set: 32+32 train, 8+8 test scenes, 64x64
  wildrayzer data synth --out data/synth128 --scenes 64 --frames 32 --res 128 --seed 1
  wildrayzer data import --images my_photos/ --out data/mine     # then infer with data.root=data/mine
  wildrayzer data import --video walk.mp4 --out data/mine --every 5 --max-frames 32
  wildrayzer data check --config configs/tiny/wildrayzer_stage1_pretrain.yaml
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wildrayzer data", description="synthesise, import or check datasets",
                                epilog=USAGE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the synthetic static + dynamic benchmark with ground truth")
    s.add_argument("--out", default="data/synthetic", help="output root (default data/synthetic)")
    s.add_argument("--scenes", type=int, default=32, help="training scenes per kind (static and dynamic); default 32")
    s.add_argument("--test-scenes", type=int, default=None, help="test scenes per kind (default max(1, scenes // 4))")
    s.add_argument("--dynamic-scenes", type=int, default=None,
                   help="dynamic training scenes (default: --scenes; 0 for a static-only stage-1 set)")
    s.add_argument("--transient-distance", type=float, nargs=2, default=(0.6, 1.5), metavar=("MIN", "MAX"),
                   help="metres ahead of the camera where transients walk (default 0.6 1.5; nearer = larger)")
    s.add_argument("--transient-scale", type=float, default=1.0, metavar="S",
                   help="multiply every transient's size by S (default 1; 1.35 covers 18 %% of the test's context "
                        "pixels instead of 10 %%)")
    s.add_argument("--transient-travel", type=float, nargs=2, default=(1.5, 4.0), metavar=("MIN", "MAX"),
                   help="metres a transient walks over the clip, start to end (default 1.5 4.0; 0.6 2.2 before v0.7)")
    s.add_argument("--frames", type=int, default=24, help="frames per scene (default 24, at least 8)")
    s.add_argument("--res", type=int, default=64, help="square resolution in pixels (default 64)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--coco-images", type=int, default=24, help="images in the copy-paste COCO set (default 24)")
    s.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    s.add_argument("--no-progress", action="store_true")

    i = sub.add_parser("import", help="turn your photos or a video into an LVSM-layout scene for inference")
    src = i.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="folder of photos (sorted by file name)")
    src.add_argument("--video", type=Path, help="video file (read with imageio-ffmpeg)")
    i.add_argument("--out", type=Path, required=True, help="dataset root to write")
    i.add_argument("--res", type=int, default=256, help="shorter side after resizing (default 256; 0 keeps size)")
    i.add_argument("--scene", default=None, help="scene name (default: folder or video name)")
    i.add_argument("--split", default="test")
    i.add_argument("--fov", type=float, default=60.0, help="horizontal field of view used without EXIF (deg)")
    i.add_argument("--every", type=int, default=1, help="video: keep every N-th frame")
    i.add_argument("--max-frames", type=int, default=0, help="video: stop after N kept frames (0 = all)")

    c = sub.add_parser("check", help="index a configured dataset and load every item (reports bad files)")
    c.add_argument("--config", required=True, help="YAML config")
    c.add_argument("--mode", choices=("train", "eval"), default="train")
    c.add_argument("--limit", type=int, default=0, help="load at most N items (0 = all)")
    c.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. data.on_error=skip")
    return p


def _synth(args) -> int:
    from .synthetic import SynthParams, generate

    dynamic = args.scenes if args.dynamic_scenes is None else args.dynamic_scenes
    if min(args.scenes, args.test_scenes or 0, dynamic) < 0:
        raise UserError("--scenes, --test-scenes and --dynamic-scenes must be >= 0")
    test = max(1, args.scenes // 4) if args.test_scenes is None else args.test_scenes
    near, far = args.transient_distance
    if not 0.5 <= near <= far <= 10:
        raise UserError(f"--transient-distance {near} {far}: give MIN <= MAX between 0.5 and 10 metres")
    lo, hi = args.transient_travel
    if not 0 <= lo <= hi <= 20:
        raise UserError(f"--transient-travel {lo} {hi}: give MIN <= MAX between 0 and 20 metres")
    if not 0.25 <= args.transient_scale <= 4:
        raise UserError(f"--transient-scale {args.transient_scale}: give a factor between 0.25 and 4")
    params = SynthParams(static_train=args.scenes, static_test=test, dynamic_train=dynamic, dynamic_test=test,
                         frames=args.frames, res=args.res, seed=args.seed, coco_images=args.coco_images,
                         transient_distance=(near, far), transient_travel=(lo, hi),
                         transient_scale=args.transient_scale)
    summary = generate(Path(args.out), params, workers=max(1, args.workers), progress=not args.no_progress)
    print(json.dumps({"out": str(args.out), **summary}))
    return 0


def _import(args) -> int:
    from .importer import image_frames, import_scene, video_frames

    if args.every < 1:
        raise UserError("--every must be >= 1")
    if args.max_frames < 0 or args.res < 0:
        raise UserError("--max-frames and --res must be >= 0 (0: all frames / keep the size)")
    if not 0 < args.fov < 180:
        raise UserError(f"--fov {args.fov} is not a field of view; give degrees between 0 and 180 (default 60)")
    if args.images is not None:
        frames, source = image_frames(args.images), str(args.images)
        scene = args.scene or args.images.resolve().name
    else:
        frames, source = video_frames(args.video, args.every, args.max_frames), str(args.video)
        scene = args.scene or args.video.stem
    meta = import_scene(frames, args.out, scene, args.res, args.split, args.fov, source)
    info = json.loads(meta.read_text())
    print(f"wrote {len(info['frames'])} frames of scene '{scene}' to {args.out / args.split} "
          f"(intrinsics: {info['import']['intrinsics_source']}); run inference with data.root={args.out} "
          f"data.split={args.split} data.list_file=full_list.txt data.view_idx_file=view_idx.json")
    return 0


def _check(args) -> int:
    from ..config import load_config
    from . import build_dataset

    cfg = load_config(Path(args.config), args.overrides)
    ds = build_dataset(cfg, args.mode)
    n = len(ds) if args.limit <= 0 else min(args.limit, len(ds))
    for k in range(n):
        ds[k]
    print(f"{ds.summary()}; loaded {n} item(s), skipped {ds.skipped}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    return {"synth": _synth, "import": _import, "check": _check}[args.command](args)


if __name__ == "__main__":
    from ..cli import run_guarded

    sys.exit(run_guarded(main, sys.argv[1:]))
