"""Speed, memory and scaling against this machine's own matmul peak (a benchmark, not a test): JSON lines + a table.

    .venv/bin/python benchmarks/speed.py [--device cpu|cuda] [--quick] [--all] [--threads N] [--md FILE]
    (or: wildrayzer bench speed ...)

Measurements (one JSON object each, with machine info and the 1-minute load average when it was taken):

* ``peak_matmul``: dense square matmul FLOP/s, best of N (fp32 on CPU with all cores, bf16 on CUDA);
* ``train_step``: forward + backward + grad clipping + AdamW step of stage 1 (MSE loss; the perceptual term is off as
  in the tiny configs) for the tiny config and the paper-width model (d=768, 12 heads, 256², patch 16, 768 latents,
  2 context + 6 targets). On CPU the paper-width step uses ``--paper-train-layers`` layers per part (default 1: a
  full 12/8/12 step costs ~6 TFLOP) -- FLOPs and MFU are counted for the layers actually run; ``tokens_per_s`` =
  input patch tokens (batch · views · patches per view) per second; time = best of the repeats (median also given);
* ``inference``: 2 context -> 6 targets, paper width and layer counts (the pipeline's call: the camera estimator sees
  all 8 views), latency and its ratio to the floor = model FLOPs / peak;
* ``inference_targets``: rendering 1, 2, 4, 8 targets from fixed scene latents (``WildRayZer.render``), linear fit;
* ``inference_context``: encoding (camera estimator + scene encoder) 2, 3, 4 context views;
* ``attention``: SDPA against ``wildrayzer.nn.naive_attention`` (B·heads = 12, N = 1024, Dh = 64): speed and error;
* with ``--all``: ``benchmarks/bench_synth.py`` and ``benchmarks/bench_pseudolabel.py`` (their JSON, nested).

FLOPs formula and memory definition: see ``benchmarks/speed_lib.py``. ``--quick`` (~1 min on 2 quiet cores) runs
the paper-width model with 1 layer per part (train step at 128²) and fewer repeats; every row states its layer counts
and image size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_lib import (  # noqa: E402
    linear_fit,
    machine_info,
    model_flops,
    peak_matmul,
    peak_memory,
    print_table,
    reset_peak_memory,
    stage1_train_step,
    time_fn,
)

ROOT = Path(__file__).resolve().parents[1]
TINY_CFG = ROOT / "configs/tiny/wildrayzer_stage1_pretrain.yaml"
PAPER_CFG = ROOT / "configs/wildrayzer_stage1_pretrain.yaml"


class Reporter:
    def __init__(self, machine: dict):
        self.machine, self.rows = machine, []

    def emit(self, measurement: str, **fields) -> dict:
        row = {"benchmark": "speed", "measurement": measurement, **fields,
               "load_avg_1m": round(os.getloadavg()[0], 2), "machine": self.machine}
        print(json.dumps(row), flush=True)
        self.rows.append(row)
        return row


def load_cfg(path: Path, overrides: list[str]):
    from wildrayzer.config import load_config

    return load_config(path, ["training.perceptual_weight=0", *overrides])


def layer_overrides(layers: int | None) -> list[str]:
    if layers is None:
        return []
    return [f"model.{k}_layers={layers}" for k in ("camera", "scene", "renderer")]


def amp_ctx(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def build(cfg, device: torch.device):
    from wildrayzer.model import WildRayZerModel

    torch.manual_seed(0)
    return WildRayZerModel(cfg.model).to(device)


def layers_of(m) -> str:
    return f"{m.camera_layers}/{m.scene_layers}/{m.renderer_layers}"


def bench_train(rep: Reporter, name: str, cfg, device, batch: int, repeats: int, peak: float) -> None:
    m = cfg.model
    train, params = stage1_train_step(cfg, device, batch)  # perceptual off (perceptual_weight=0)
    v = m.num_context_views + m.num_target_views
    step = partial(train, partial(amp_ctx, device))

    step()  # first step allocates the optimizer state
    reset_peak_memory(device)
    t = time_fn(step, device, repeats, warmup=1)
    flops = model_flops(m, v, m.num_context_views, m.num_target_views, batch, train=True)
    n = (m.image_size // m.patch_size) ** 2
    achieved = flops["total"] / t["best_s"]
    rep.emit("train_step", model=name, batch=batch, image_size=m.image_size, dim=m.dim, heads=m.heads,
             layers=layers_of(m), views=f"{m.num_context_views}+{m.num_target_views}",
             params_m=round(sum(p.numel() for p in params) / 1e6, 2), step_s=t["best_s"], step_median_s=t["median_s"],
             runs_s=t["runs_s"], tokens_per_s=round(batch * v * n / t["best_s"], 1), model_flops=flops,
             achieved_flops=achieved, mfu=round(achieved / peak, 4), **peak_memory(device))


def bench_inference(rep: Reporter, cfg, device, repeats: int, peak: float) -> None:
    m = cfg.model
    model = build(cfg, device).eval()
    vc, t_views = m.num_context_views, m.num_target_views
    images = torch.rand(1, vc + t_views, 3, m.image_size, m.image_size, device=device)
    with torch.inference_mode(), amp_ctx(device):
        reset_peak_memory(device)
        t = time_fn(lambda: model(images, vc), device, repeats, warmup=1)
        flops = model_flops(m, vc + t_views, vc, t_views)["total"]
        floor = flops / peak
        rep.emit("inference", image_size=m.image_size, dim=m.dim, layers=layers_of(m), views=f"{vc}+{t_views}",
                 latency_s=t["best_s"], latency_median_s=t["median_s"], runs_s=t["runs_s"], model_flops=flops,
                 floor_s=floor, latency_over_floor=round(t["best_s"] / floor, 3), mfu=round(floor / t["best_s"], 4),
                 **peak_memory(device))

        enc = model(images[:, :vc], vc, render_targets=False)
        scene, cams = enc["scene_tokens"], model(images, vc, render_targets=False)["cameras"]
        counts, times = [1, 2, 4, 8], []
        for k in counts:
            c2w, fx = cams["c2w"][:, :1].expand(1, k, 4, 4), cams["fxfycxcy"][:, :1].expand(1, k, 4)
            times.append(time_fn(partial(model.render, scene, c2w, fx), device, repeats, warmup=1)["best_s"])
        fit = linear_fit(counts, times)
        per_target_floor = model_flops(m, 0, 0, 1)["renderer"] / peak
        rep.emit("inference_targets", image_size=m.image_size, dim=m.dim, layers=layers_of(m), targets=counts,
                 render_s=times, slope_s_per_target=fit["slope"], intercept_s=fit["intercept"], r2=fit["r2"],
                 per_target_floor_s=per_target_floor, slope_over_floor=round(fit["slope"] / per_target_floor, 3))


def bench_context(rep: Reporter, cfg_path: Path, overrides: list[str], device, repeats: int, peak: float) -> None:
    counts, times, floors = [2, 3, 4], [], []
    for vc in counts:
        cfg = load_cfg(cfg_path, [*overrides, f"model.num_context_views={vc}"])
        m = cfg.model
        model = build(cfg, device).eval()
        images = torch.rand(1, vc, 3, m.image_size, m.image_size, device=device)
        with torch.inference_mode(), amp_ctx(device):
            call = partial(model, images, vc, render_targets=False)
            times.append(time_fn(call, device, repeats, 1)["best_s"])
        f = model_flops(m, vc, vc, 0)
        floors.append((f["camera"] + f["scene"]) / peak)
    fit = linear_fit(counts, times)
    rep.emit("inference_context", image_size=m.image_size, dim=m.dim, layers=layers_of(m), context_views=counts,
             encode_s=times, floor_s=floors, latency_over_floor=[round(t / f, 3) for t, f in zip(times, floors)],
             slope_s_per_view=fit["slope"], r2=fit["r2"],
             note="camera estimator + scene encoder on the context views; rendering cost does not depend on them")


def bench_attention(rep: Reporter, device, repeats: int) -> None:
    import torch.nn.functional as F

    from wildrayzer.nn import naive_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 12, 1024, 64, generator=g).to(device) for _ in range(3))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    qd, kd, vd = q.to(dtype), k.to(dtype), v.to(dtype)
    with torch.inference_mode():
        t_sdpa = time_fn(lambda: F.scaled_dot_product_attention(qd, kd, vd), device, repeats, 2)
        t_naive = time_fn(lambda: naive_attention(qd, kd, vd), device, repeats, 2)
        ref = naive_attention(q.double(), k.double(), v.double())
        err_sdpa = (F.scaled_dot_product_attention(qd, kd, vd).double() - ref).abs().max().item()
        err_naive = (naive_attention(qd, kd, vd).double() - ref).abs().max().item()
    rep.emit("attention", shape=[1, 12, 1024, 64], dtype=str(dtype).replace("torch.", ""),
             sdpa_s=t_sdpa["best_s"], naive_s=t_naive["best_s"], naive_over_sdpa=round(t_naive["best_s"] /
             t_sdpa["best_s"], 3), max_abs_err_sdpa_vs_fp64=err_sdpa, max_abs_err_naive_vs_fp64=err_naive,
             max_abs_err_sdpa_vs_naive=(F.scaled_dot_product_attention(q, k, v) - naive_attention(q, k, v))
             .abs().max().item())


def run_other(rep: Reporter, script: str, args: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, capture_output=True,
                          text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": proc.stderr.strip()[-500:]}
    rep.emit(script.removesuffix(".py"), args=args, result=result)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="~1 minute: smaller peak matmul, 1 layer per part, 2 repeats")
    p.add_argument("--all", action="store_true", help="also run bench_synth.py and bench_pseudolabel.py")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--paper-train-layers", default=None,
                   help="layers per part for the paper-width train step ('full' = 12/8/12; default 1 on CPU)")
    p.add_argument("--paper-train-batch", type=int, default=None, help="default 1 on CPU, 8 on CUDA")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 3, quick 2)")
    p.add_argument("--md", default=None, help="also write the results table (markdown) to this file")
    args = p.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("speed: --device cuda requested but CUDA is not available in this torch build/machine "
              f"(torch {torch.__version__}); run with --device cpu", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    rep = Reporter(machine_info(device))
    repeats = args.repeats or (2 if args.quick else 3)
    cpu = device.type == "cpu"

    size = (2048 if args.quick else 4096) if cpu else 8192
    pk = peak_matmul(device, size, repeats=5 if args.quick else 10)
    peak = pk["peak_flops"]
    rep.emit("peak_matmul", **pk)

    bench_attention(rep, device, repeats=5)
    bench_train(rep, "tiny", load_cfg(TINY_CFG, []), device, batch=4, repeats=repeats + 2, peak=peak)
    train_layers = args.paper_train_layers or ("1" if cpu else "full")
    layers = None if train_layers == "full" else int(train_layers)
    batch = args.paper_train_batch or (1 if cpu else 8)
    train_over = layer_overrides(layers) + (["model.image_size=128"] if args.quick else [])
    bench_train(rep, "paper-width", load_cfg(PAPER_CFG, train_over), device, batch, repeats, peak)
    inf_layers = layer_overrides(1 if args.quick else None)
    bench_inference(rep, load_cfg(PAPER_CFG, inf_layers), device, repeats, peak)
    bench_context(rep, PAPER_CFG, inf_layers, device, repeats, peak)
    if args.all:
        quick = args.quick
        run_other(rep, "bench_synth.py", ["--scenes", "1", "--frames", "8"] if quick else [])
        run_other(rep, "bench_pseudolabel.py", ["--scenes", "2"] if quick else [])

    end = peak_matmul(device, size, repeats=5)  # contention drift: a lower/higher end peak means the figures moved
    rep.emit("peak_matmul_end", **end, start_peak_flops=peak, end_over_start=round(end["peak_flops"] / peak, 3))

    from speed_table import table

    print_table(table(rep.rows), args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
