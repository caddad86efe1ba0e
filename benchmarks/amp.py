"""Training-step time of the tiny recipe's stage-1 phases in fp32 and in bf16 autocast (a benchmark, not a test).

    .venv/bin/python benchmarks/amp.py [--device cpu|cuda] [--repeats N] [--threads N] [--quick] [--compile]
                                       [--md FILE]
    (or: wildrayzer bench amp ...)

One JSON line per phase and precision, then a table. Phases (the tiny config, 64², 2 context + 6 targets, as
``tools/posed_to_selfsup.sh`` trains them): ``posed`` (``model.cameras=given``, batch 32, everything trains),
``camera`` (own-view camera estimator with the shift cue, batch 8, tokenizer / scene / renderer frozen) and ``joint``
(the same model, batch 8, everything trains). Precisions: ``fp32``; ``bf16`` = ``training.amp=bf16`` as the package
runs it (autocast; attention in fp32 on a CPU, :func:`wildrayzer.nn.sdpa`); ``bf16-attn`` = the same with attention
left to PyTorch's bf16 kernel (what the package did before v2.5, for the record); with ``--compile`` also
``bf16+compile`` = ``training.amp=bf16 training.compile=true`` (torch.compile; its compilation, a minute or more a
phase on a small CPU, falls in the untimed warm-up step). A step = forward, loss, backward,
grad clipping and AdamW step on random images and cameras (the data loader is not timed); time = median of the
repeats after one warm-up step. bf16 pays on CPUs with bf16 matmul units (``amx_bf16`` / ``avx512_bf16`` in
``/proc/cpuinfo``, reported as ``cpu_bf16``); elsewhere it can be slower than fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_lib import machine_info, print_table, stage1_train_step, time_fn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_CFG = ROOT / "configs/tiny/wildrayzer_stage1_pretrain.yaml"
OWN_VIEW = ["model.camera_query=own_view", "model.camera_shift_cue=true"]
PHASES = {"posed": (["model.cameras=given"], 32, ()),
          "camera": (OWN_VIEW, 8, ("tokenizer", "scene", "renderer")),
          "joint": (OWN_VIEW, 8, ())}
PRECISIONS = ("fp32", "bf16", "bf16-attn")
COMPILED = "bf16+compile"


def cpu_bf16_flags() -> list[str]:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(set(flags.split()) & {"amx_bf16", "avx512_bf16"})


def make_step(phase: str, device: torch.device, batch: int | None, compile: bool = False):
    """-> (step(amp: bool), batch) for one phase of the recipe (:data:`PHASES`)."""
    from wildrayzer.config import load_config

    overrides, default_batch, frozen = PHASES[phase]
    cfg = load_config(TINY_CFG, ["training.perceptual_weight=0", *overrides])
    b = batch or default_batch
    train, _ = stage1_train_step(cfg, device, b, frozen, compile=compile)

    def step(amp: bool) -> None:
        train(partial(torch.autocast, device.type, dtype=torch.bfloat16) if amp else nullcontext)

    return step, b


def measure(phase: str, precision: str, device: torch.device, repeats: int, batch: int | None) -> dict:
    import wildrayzer.nn as wnn

    step, b = make_step(phase, device, batch, compile=precision == COMPILED)
    keep = wnn.sdpa
    if precision == "bf16-attn":
        wnn.sdpa = F.scaled_dot_product_attention  # the kernel in the autocast dtype, as before v2.5
    try:  # one warm-up step: optimiser state, kernel selection
        t = time_fn(partial(step, precision != "fp32"), device, repeats, warmup=1)
    finally:
        wnn.sdpa = keep
    median = t["median_s"]
    return {"benchmark": "amp", "phase": phase, "precision": precision, "batch": b, "step_s": round(median, 4),
            "samples_per_s": round(b / median, 2), "runs_s": t["runs_s"]}


def table(rows: list[dict]) -> str:
    compiled = any(r["precision"] == COMPILED for r in rows)
    extra = " bf16 + compile (s) | its speed-up |" if compiled else ""
    lines = ["| phase | batch | fp32 step (s) | bf16 step (s) | bf16 speed-up | bf16, bf16 attention (s) |" + extra,
             "|---|---|---|---|---|---|" + "---|---|" * compiled]
    for phase in PHASES:
        by = {r["precision"]: r for r in rows if r["phase"] == phase}
        if "fp32" not in by:
            continue
        f, b, a, c = by["fp32"], by.get("bf16"), by.get("bf16-attn"), by.get(COMPILED)
        line = (f"| {phase} | {f['batch']} | {f['step_s']:.3f} | {b['step_s']:.3f} | "
                f"{f['step_s'] / b['step_s']:.2f}x | {a['step_s']:.3f} |" if b and a else
                f"| {phase} | {f['batch']} | {f['step_s']:.3f} | – | – | – |")
        if compiled:
            line += f" {c['step_s']:.3f} | {f['step_s'] / c['step_s']:.2f}x |" if c else " – | – |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=5, help="timed steps per phase and precision (median reported)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--quick", action="store_true", help="batch 2 and 2 repeats: a smoke run, not a measurement")
    p.add_argument("--compile", action="store_true", help=f"also time {COMPILED} (training.compile=true)")
    p.add_argument("--md", default=None, help="also write the table (markdown) to this file")
    args = p.parse_args(argv)
    if args.repeats < 1:
        print("amp: --repeats must be >= 1", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"amp: --device cuda requested but CUDA is not available (torch {torch.__version__})", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    machine = {**machine_info(device), "cpu_bf16": cpu_bf16_flags()}
    repeats, batch = (2, 2) if args.quick else (args.repeats, None)
    rows = []
    for phase in PHASES:
        for precision in PRECISIONS + ((COMPILED,) if args.compile else ()):
            row = {**measure(phase, precision, device, repeats, batch), "machine": machine}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print_table(table(rows), args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
