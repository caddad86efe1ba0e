"""Markdown results table from the JSON rows of ``benchmarks/speed.py``."""

from __future__ import annotations


def _g(x: float) -> str:
    return f"{x / 1e9:.1f} GFLOP/s"


def _s(x: float) -> str:
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def table(rows: list[dict]) -> str:
    if not rows:
        return ""
    mach = rows[0]["machine"]
    head = (f"Machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']}, device {mach['device']}"
            f"{' (' + mach['gpu'] + ')' if 'gpu' in mach else ''}, {mach['threads']} threads; load average at start "
            f"{'/'.join(str(x) for x in mach['load_avg_start'])} (1/5/15 min)")
    out = [head, "", "| measurement | setting | result | vs machine limit | memory | load 1m |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        kind, load = r["measurement"], r["load_avg_1m"]
        mem = f"{r['peak_memory_mib']:.0f} MiB ({r['memory_kind']})" if r.get("peak_memory_mib") else "–"
        if kind == "peak_matmul":
            out.append(f"| peak matmul | {r['dtype']} {r['size']}² best of {len(r['runs_s'])} | {_g(r['peak_flops'])} "
                       f"(median {_g(r['median_flops'])}) | = peak | – | {load} |")
        elif kind == "peak_matmul_end":
            out.append(f"| peak matmul, end of run | {r['dtype']} {r['size']}² best of {len(r['runs_s'])} | "
                       f"{_g(r['peak_flops'])} | {r['end_over_start']}× the start peak (drift = contention) | – "
                       f"| {load} |")
        elif kind == "attention":
            out.append(f"| attention SDPA vs naive | {r['dtype']} {tuple(r['shape'])} | SDPA {_s(r['sdpa_s'])}, naive "
                       f"{_s(r['naive_s'])} (naive/SDPA {r['naive_over_sdpa']}×) | max abs err SDPA–naive "
                       f"{r['max_abs_err_sdpa_vs_naive']:.1e}, vs fp64 {r['max_abs_err_sdpa_vs_fp64']:.1e} | – "
                       f"| {load} |")
        elif kind == "train_step":
            out.append(f"| train step {r['model']} | d={r['dim']}, {r['heads']} heads, layers {r['layers']}, batch "
                       f"{r['batch']}, {r['image_size']}², {r['views']} views, {r['params_m']}M params | "
                       f"{_s(r['step_s'])} (median {_s(r['step_median_s'])}), {r['tokens_per_s']:.0f} tokens/s, "
                       f"{r['model_flops']['total'] / 1e9:.1f} GFLOP | {_g(r['achieved_flops'])}, "
                       f"**MFU {r['mfu']:.2f}** | {mem} | {load} |")
        elif kind == "inference":
            out.append(f"| inference | d={r['dim']}, layers {r['layers']}, {r['image_size']}², {r['views']} views | "
                       f"{_s(r['latency_s'])} (median {_s(r['latency_median_s'])}), {r['model_flops'] / 1e9:.0f} "
                       f"GFLOP | floor {_s(r['floor_s'])}, **{r['latency_over_floor']}× floor** (MFU {r['mfu']:.2f})"
                       f" | {mem} | {load} |")
        elif kind == "inference_targets":
            pts = ", ".join(f"{k}: {_s(t)}" for k, t in zip(r["targets"], r["render_s"]))
            out.append(f"| render vs #targets | layers {r['layers']} | {pts}; slope {_s(r['slope_s_per_target'])}"
                       f"/target, R² {r['r2']:.4f} | slope = {r['slope_over_floor']}× per-target floor | – | {load} |")
        elif kind == "inference_context":
            pts = ", ".join(f"{k}: {_s(t)}" for k, t in zip(r["context_views"], r["encode_s"]))
            ratios = ", ".join(str(x) for x in r["latency_over_floor"])
            out.append(f"| encode vs #context | layers {r['layers']} | {pts}; slope {_s(r['slope_s_per_view'])}/view,"
                       f" R² {r['r2']:.4f} | {ratios}× floor | – | {load} |")
        else:
            res = r["result"]
            fps = res.get("frames_per_s", res.get("error", "?"))
            out.append(f"| {kind} | {' '.join(r['args']) or 'defaults'} | {fps} frames/s | – | – | {load} |")
    return "\n".join(out)
