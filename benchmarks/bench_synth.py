"""Synthetic-data generator throughput (a benchmark, not a test): prints one JSON line.

    .venv/bin/python benchmarks/bench_synth.py [--res 128] [--scenes 4] [--frames 24] [--workers 1]

Generates ``scenes`` static + ``scenes`` dynamic training scenes (everything written to disk: images, depth and, for
dynamic scenes, clean images and masks) into a temporary directory and reports wall-clock frames per second, and
frames per CPU second of this process (meaningful when other jobs share the cores; see ``load_average_1m``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", type=int, default=128)
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()

    from wildrayzer.data.scenes import random_scene
    from wildrayzer.data.synthetic import SynthParams, generate, render_frame, scene_rng

    params = SynthParams(static_train=args.scenes, static_test=0, dynamic_train=args.scenes, dynamic_test=0,
                         frames=args.frames, res=args.res, coco_images=0)
    spec = random_scene(scene_rng(0, "dynamic", "train", 0), args.frames, args.res, args.res, True)
    render_frame(spec, 0)  # warm caches (texture photographs)
    t0 = time.perf_counter()
    for i in range(args.frames):
        render_frame(spec, i)
    render_only = args.frames / (time.perf_counter() - t0)
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate(tmp, params, workers=args.workers, progress=False)
    cpu = time.process_time() - cpu0  # this process only (workers > 1 run in children)
    print(json.dumps({
        "benchmark": "synth", "res": args.res, "frames": summary["frames"], "workers": args.workers,
        "seconds": summary["seconds"], "frames_per_s": summary["frames_per_s"],
        "render_only_dynamic_frames_per_s": round(render_only, 1),
        "cpu_seconds": round(cpu, 3), "frames_per_cpu_s": round(summary["frames"] / max(cpu, 1e-9), 1) if
        args.workers == 1 else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "numpy": np.__version__},
    }))


if __name__ == "__main__":
    main()
