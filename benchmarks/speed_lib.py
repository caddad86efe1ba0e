"""Helpers of ``benchmarks/speed.py``: machine info, timing, peak matmul FLOP/s, analytic model FLOPs, memory.

Model FLOPs (multiply-add = 2 FLOPs), counted analytically from the config, never measured:

* one transformer layer over N tokens of width d (MLP ratio r, default 4) costs, forward,
  ``(8 + 4r)·N·d² + 4·N²·d``  = ``24·N·d² + 4·N²·d`` for r = 4
  (qkv 6Nd², output projection 2Nd², MLP 4r·Nd², scores QKᵀ 2N²d, weighted sum AV 2N²d);
  LayerNorms, QK-norm, softmax, GELU and residual adds are not counted (they are O(N·d));
* a linear layer on N tokens from a to b channels: ``2·N·a·b`` (patch embeddings a = C·p², RGB head b = 3·p²,
  pose/focal MLP heads on one pooled token per view);
* token counts per sample: camera estimator sees all ``V`` views jointly, ``N = V·n`` (n = (H/p)² patches per view);
  scene encoder ``N = Vc·n + L`` (L scene latents); renderer, once per target, ``N = n + L``;
* training (forward + backward) = 3 × forward (the backward costs two matmuls per forward matmul); the optimizer
  step (element-wise AdamW) is not counted.

MFU = model FLOPs per second ÷ this machine's measured dense matmul peak (same process, same threads).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "device": device.type,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def print_table(text: str, md: str | None = None) -> None:
    """Print a benchmark's results table and, with ``md``, also write it to that file (markdown)."""
    print(text)
    if md:
        with open(md, "w") as f:
            f.write(text + "\n")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times -> {"best_s", "median_s", "runs_s"}."""
    for _ in range(warmup):
        fn()
    sync(device)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        runs.append(time.perf_counter() - t0)
    return {"best_s": min(runs), "median_s": statistics.median(runs), "runs_s": [round(r, 4) for r in runs]}


def stage1_train_step(cfg, device: torch.device, batch: int, freeze: Sequence[str] = (), compile: bool = False) \
        -> tuple[Callable[[Callable[[], AbstractContextManager]], None], list]:
    """One stage-1 training step as the loop takes it, on random images and cameras (a sideways walk; read only by a
    posed model): forward and loss inside ``ctx()`` (e.g. autocast), backward, grad clipping
    (``training.grad_clip``, none at 0), AdamW step. The model is built with seed 0, trains its stage-1 parts minus
    ``freeze``, and with ``compile`` runs under ``torch.compile`` as ``training.compile`` has it (the first step
    compiles) -> (step(ctx=nullcontext), its trainable parameters)."""
    from wildrayzer.model import WildRayZerModel
    from wildrayzer.train.optim import build_optimizer
    from wildrayzer.train.stage1 import Stage1Pretrain
    from wildrayzer.train.stages import apply_trainable

    m = cfg.model
    torch.manual_seed(0)
    model = WildRayZerModel(m).to(device).train()
    apply_trainable(model, 1, freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(model, cfg.training)
    stage = Stage1Pretrain()  # perceptual term as the config says (the benchmarks turn it off)
    v = m.num_context_views + m.num_target_views
    c2w = torch.eye(4).repeat(batch, v, 1, 1)
    c2w[..., 0, 3] = torch.linspace(-0.5, 0.5, v)
    data = {"images": torch.rand(batch, v, 3, m.image_size, m.image_size, device=device), "c2w": c2w.to(device),
            "fxfycxcy": torch.tensor([m.image_size, m.image_size, m.image_size / 2, m.image_size / 2],
                                     device=device).repeat(batch, v, 1)}
    clip = cfg.training.grad_clip if cfg.training.grad_clip > 0 else 1e9
    fwd = torch.compile(model) if compile else model

    def step(ctx: Callable[[], AbstractContextManager] = nullcontext) -> None:
        with ctx():
            loss, _ = stage.compute_losses(data, stage.forward(fwd, data, cfg), cfg)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, params


def peak_matmul(device: torch.device, size: int, repeats: int) -> dict:
    """Dense square matmul FLOP/s, best of ``repeats`` (fp32 on CPU, bf16 on CUDA)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    t = time_fn(lambda: a @ b, device, repeats, warmup=1)
    flops = 2.0 * size ** 3
    return {"dtype": str(dtype).replace("torch.", ""), "size": size, "flops_per_matmul": flops,
            "peak_flops": flops / t["best_s"], "median_flops": flops / t["median_s"], **t}


# ---------------------------------------------------------------------------------------------------------------- FLOPs
def layer_flops(n: int, d: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of one transformer layer on n tokens of width d."""
    return (8 + 4 * mlp_ratio) * n * d * d + 4.0 * n * n * d


def model_flops(m, views: int, context: int, targets: int, batch: int = 1, train: bool = False) -> dict:
    """Analytic FLOPs of one WildRayZer call (no motion estimator). ``m``: the ``model`` config section.

    ``views``: views seen by the camera estimator; ``context``: views encoded by the scene encoder; ``targets``:
    views rendered. Returns per-module and total FLOPs for ``batch`` samples (×3 when ``train``).
    """
    d, p, r, L = m.dim, m.patch_size, m.mlp_ratio, m.num_latents
    n = (m.image_size // p) ** 2
    lin = 2.0 * d  # per token per input channel of a linear layer into d
    tokenizer = views * n * (lin * 3 * p * p + 4.0 * d * d)  # patch embedding + position-embedding MLP
    camera = m.camera_layers * layer_flops(views * (n + 1), d, r) + views * 4.0 * d * d  # + camera-token MLPs
    camera += (views - 1) * (4.0 * d * d + 2.0 * d * 9) + 2.0 * d * d + 2.0 * d  # pose heads + focal head
    fuse = context * n * (lin * 6 * p * p + 2.0 * 2 * d * d + 2.0 * d * d)  # Plücker embedding + fusion MLP
    scene = m.scene_layers * layer_flops(context * n + L, d, r) + fuse
    render = targets * (m.renderer_layers * layer_flops(n + L, d, r) + n * lin * 6 * p * p + n * 2.0 * d * 3 * p * p)
    mult = batch * (3.0 if train else 1.0)
    out = {"camera": (camera + tokenizer) * mult, "scene": scene * mult, "renderer": render * mult}
    out["total"] = sum(out.values())
    return out


# --------------------------------------------------------------------------------------------------------------- memory
def reset_peak_memory(device: torch.device) -> None:
    """CUDA: reset the allocator's peak. CPU: reset the process's peak RSS (VmHWM) via /proc/self/clear_refs."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory(device: torch.device) -> dict:
    """CUDA: torch.cuda.max_memory_allocated. CPU: VmHWM (peak resident set size of the whole process) since the
    last :func:`reset_peak_memory` (includes the Python interpreter, torch and the model, not only activations)."""
    if device.type == "cuda":
        return {"peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1),
                "memory_kind": "cuda max_memory_allocated"}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return {"peak_memory_mib": round(int(line.split()[1]) / 1024, 1), "memory_kind": "RSS VmHWM"}
    except OSError:
        pass
    return {"peak_memory_mib": None, "memory_kind": "unavailable"}


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares y = slope·x + intercept and its R²."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"slope": slope, "intercept": intercept, "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}
