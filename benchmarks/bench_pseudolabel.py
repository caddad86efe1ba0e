"""Pseudo-motion-mask throughput on one CPU core (a benchmark, not a test): prints one JSON line.

    .venv/bin/python benchmarks/bench_pseudolabel.py [--size 128] [--scenes 8] [--frames 6] [--threads 1] [k=v ...]

Builds synthetic scenes (``tests/pseudolabel_synth.py``: photo = static render + moving pasted object + noise),
then times, per frame and excluding the static render: semantic features of photo and render (the configured
backbone) and the constructor (scores, co-segmentation, morphology, GrabCut, PSNR filter). ``frames_per_s`` is wall
clock; ``frames_per_cpu_s`` divides by the process's CPU time, the per-core figure that stays meaningful when other
jobs share the machine (compare it with ``machine.load_avg_1min``). Also reports the mask IoU
against the known object masks. Trailing ``key=value`` items override the config (e.g.
``pseudolabel.score_threshold=2.0``). Goal: >= 10 frames/s/core at 128x128.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic-scene helper
from speed_lib import cpu_model  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (1 = per-core figure)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)

    import cv2
    import torch
    from pseudolabel_synth import make_scene, mask_iou

    from wildrayzer.config import load_config
    from wildrayzer.pseudolabel.constructor import build_pseudo_masks
    from wildrayzer.semantic import build_semantic_backbone

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    cfg = load_config(None, args.overrides)
    backbone = build_semantic_backbone(cfg.semantic)
    scenes = [make_scene(args.size, args.frames, seed) for seed in range(args.scenes)]
    s0 = scenes[0]  # warm-up (allocator, OpenCV, MKL-DNN kernels)
    build_pseudo_masks(s0["photos"], s0["renders"], backbone(s0["photos"]), backbone(s0["renders"]), cfg)

    t_feat = t_build = 0.0
    ious = []
    cpu0 = time.process_time()
    for s in scenes:
        t0 = time.perf_counter()
        pf, rf = backbone(s["photos"]), backbone(s["renders"])
        t1 = time.perf_counter()
        out = build_pseudo_masks(s["photos"], s["renders"], pf, rf, cfg)
        t2 = time.perf_counter()
        t_feat, t_build = t_feat + t1 - t0, t_build + t2 - t1
        ious.append(mask_iou(out.masks, s["masks"]))
    cpu = time.process_time() - cpu0  # CPU seconds of this process: the per-core cost even on a shared machine
    frames = args.scenes * args.frames
    result = {
        "benchmark": "pseudolabel", "size": args.size, "scenes": args.scenes, "frames_per_scene": args.frames,
        "threads": args.threads, "backbone": cfg.semantic.backbone, "overrides": args.overrides,
        "frames_per_s": round(frames / (t_feat + t_build), 2),
        "frames_per_s_per_thread": round(frames / (t_feat + t_build) / args.threads, 2),
        "frames_per_cpu_s": round(frames / cpu, 2),
        "ms_per_frame": {"features": round(1000 * t_feat / frames, 1),
                         "constructor": round(1000 * t_build / frames, 1)},
        "iou_mean": round(statistics.mean(ious), 3), "iou_per_scene": [round(i, 3) for i in ious],
        "machine": {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "torch": torch.__version__, "opencv": cv2.__version__},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
