"""Plücker ray-map visualisations (``inference.save_plucker_vis``), one set per target view.

A Plücker map is ``(H, W, 6) = [m, d]`` with ``d`` the unit world direction and ``m = o x d`` the moment
(:func:`wildrayzer.geometry.plucker_rays`). Written per view (``<stem>_*.png``):

* ``direction`` — ``(d + 1) / 2`` as RGB, H x W pixels.
* ``moment`` — ``|m|`` (the ray's distance from the world origin) as a viridis heatmap scaled to the view's maximum,
  H x W pixels; all dark for a camera at the origin (e.g. view 0, the canonical frame).
* ``residual`` — the Klein-quadric residual. Six numbers are a valid line only if ``d . m = 0`` (the Klein quadric);
  rays built as ``o x d`` satisfy it up to rounding, so the map must be black. It shows ``|d . m| / max|m|``
  (scale-free) on a fixed inferno scale ``[0, RESIDUAL_VMAX]``: anything visible means a broken ray map (e.g. a
  moment that is not ``o x d``). :func:`plucker_stats` gives the numbers.
* ``quiver`` (with ``include_quiver``) — matplotlib arrows of the world-frame ``(d_x, d_y)`` sampled every ``stride``
  pixels (image y down, like OpenCV), coloured by ``d_z``, over the direction image.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from wildrayzer.geometry import plucker_rays
from wildrayzer.infer.visuals import colorize, save_png

RESIDUAL_VMAX = 1e-3


def _check(plucker: Tensor) -> Tensor:
    if plucker.dim() != 3 or plucker.shape[-1] != 6:
        raise ValueError(f"plucker map must be (H, W, 6) = [o x d, d], got {tuple(plucker.shape)}")
    return plucker.detach().cpu().double()


def klein_residual(plucker: Tensor) -> Tensor:
    """plucker: (H, W, 6) = [m, d] -> (H, W) ``|d . m|``, zero for valid lines."""
    p = _check(plucker)
    return (p[..., :3] * p[..., 3:]).sum(-1).abs()


def plucker_stats(plucker: Tensor) -> dict[str, float]:
    """plucker: (H, W, 6) -> max Klein residual (absolute and relative to max|m|), max |m|, max ||d| - 1|."""
    p = _check(plucker)
    res = klein_residual(p)
    m_max = float(p[..., :3].norm(dim=-1).max())
    return {"klein_residual_max": float(res.max()), "klein_residual_rel_max": float(res.max()) / max(m_max, 1e-12),
            "moment_max": m_max, "direction_norm_error_max": float((p[..., 3:].norm(dim=-1) - 1).abs().max())}


def plucker_images(plucker: Tensor) -> dict[str, Tensor]:
    """plucker: (H, W, 6) -> {"direction", "moment", "residual"}: (3, H, W) RGB images in [0, 1]."""
    p = _check(plucker)
    m, d = p[..., :3], p[..., 3:]
    m_norm = m.norm(dim=-1)
    m_max = max(float(m_norm.max()), 1e-12)
    return {
        "direction": ((d + 1) / 2).clamp(0, 1).permute(2, 0, 1).float(),
        "moment": colorize(m_norm, cmap="viridis", vmin=0.0, vmax=m_max),
        "residual": colorize(klein_residual(p) / m_max, cmap="inferno", vmin=0.0, vmax=RESIDUAL_VMAX),
    }


def save_quiver(path: str | Path, plucker: Tensor, stride: int = 16) -> Path:
    """Quiver plot of the direction field every ``stride`` pixels. plucker: (H, W, 6) -> PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if stride < 1:
        raise ValueError(f"plucker_vis_stride must be >= 1, got {stride}")
    p = _check(plucker)
    h, w = p.shape[:2]
    d = p[..., 3:]
    ys = torch.arange(min(stride // 2, h - 1), h, stride)
    xs = torch.arange(min(stride // 2, w - 1), w, stride)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    sub = d[gy, gx]  # (h', w', 3)
    fig = Figure(figsize=(6.0, 6.0 * h / w), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(((d + 1) / 2).clamp(0, 1).numpy(), extent=(0, w, h, 0), alpha=0.35)
    q = ax.quiver((gx + 0.5).numpy(), (gy + 0.5).numpy(), sub[..., 0].numpy(), sub[..., 1].numpy(),
                  sub[..., 2].numpy(), cmap="coolwarm", angles="xy", pivot="middle")
    fig.colorbar(q, ax=ax, fraction=0.046, pad=0.04, label="d_z (world)")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)  # image convention: y grows downwards
    ax.set_title(f"ray directions (world d_x, d_y), every {stride} px")
    ax.set_xlabel("u (px)")
    ax.set_ylabel("v (px)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def save_plucker_vis(out_dir: str | Path, plucker: Tensor, stem: str, stride: int = 16,
                     include_quiver: bool = False) -> dict[str, Path]:
    """Write one view's images. plucker: (H, W, 6) = [m, d] -> {"direction", "moment", "residual"[, "quiver"]}.

    Files are ``out_dir/<stem>_plucker_{direction,moment,residual,quiver}.png``.
    """
    out_dir = Path(out_dir)
    paths = {kind: save_png(out_dir / f"{stem}_plucker_{kind}.png", img)
             for kind, img in plucker_images(plucker).items()}
    if include_quiver:
        paths["quiver"] = save_quiver(out_dir / f"{stem}_plucker_quiver.png", plucker, stride=stride)
    return paths


def save_camera_plucker_vis(out_dir: str | Path, c2w: Tensor, fxfycxcy: Tensor, height: int, width: int,
                            stem: str, stride: int = 16, include_quiver: bool = False) -> dict[str, Path]:
    """Same as :func:`save_plucker_vis` for a camera. c2w: (4, 4), fxfycxcy: (4,) pixels at (height, width)."""
    plucker = plucker_rays(c2w.detach().cpu().double(), fxfycxcy.detach().cpu().double(), height, width)
    return save_plucker_vis(out_dir, plucker, stem, stride=stride, include_quiver=include_quiver)
