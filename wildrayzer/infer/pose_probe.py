"""What a camera estimator has learned of the geometry (``wildrayzer bench poses``).

The rotation error after Sim(3) says how far predicted cameras are from the dataset's; this probe says what they
encode. Every pose is taken relative to the first context view, and the scenes' other views are pooled:

* ``yaw``          the signed rotation about the first camera's vertical axis (:func:`~wildrayzer.geometry.yaw_deg`),
                   predicted against true: Pearson correlation, how often the signs agree (views that turn at least
                   ``MIN_TURN_DEG``; no turn predicted counts as a disagreement), and the median ratio of the
                   predicted to the true rotation angle;
* ``progress``     where each target lies between the first and the last context view. True: its centre projected
                   on the context baseline (0 at the first, 1 at the last). Predicted, twice: the same projection of
                   the predicted centre (``step``), and the target's rotation angle over the last context view's
                   (``turn``). Spearman rank correlations, since an order is what is asked. A model that orders its
                   targets along the path without the path's geometry scores high here and near zero on yaw;
* ``order_follows`` the targets fed again in reverse order: does each target's predicted place stay with its image
                   (``image``, as it should) or with its slot in the input (``slot``)?
* ``sensitivity``  (optional) how much the renderer's output changes when every target camera turns by ``turn_deg``
                   about its own vertical axis, or steps ``step`` times the context baseline along its own x axis
                   (both signs averaged), or is replaced by the first context view's camera (``first_view``): mean
                   absolute change in 0-255 levels, and the PSNR lost against the true targets. ``first_view`` is
                   what the target cameras are worth to the renderer: a renderer that ignores them loses nothing.

A renderer that reacts to a turn of the target camera while the estimator's yaw is uncorrelated with the truth uses
the predicted cameras as a code of its own (one the self-supervised loss cannot tell from the true geometry), not as
the physical cameras.
"""

from __future__ import annotations

import statistics

import torch
from torch import Tensor

from ..errors import UserError
from ..geometry import make_pose, relative_c2w, rotation_angle_deg, yaw_deg, yaw_matrix
from .evaluate import scene_indices
from .metrics import psnr_full
from .pipeline import item_cameras

MIN_TURN_DEG = 2.0  # views that turn (yaw) less than this from the first carry no size (sign) to compare
MIN_BASELINE_TURN_DEG = 0.1  # a last context view turned less than this gives no scale for the "turn" progress


def _pearson(a: list[float], b: list[float]) -> float | None:
    """Pearson correlation; None with fewer than 3 pairs or a constant side."""
    if len(a) < 3:
        return None
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    den = (x.norm() * y.norm()).item()
    return None if den < 1e-12 else float((x @ y).item() / den)


def _ranks(a: list[float]) -> list[float]:
    """0-based ranks (ties, rare in measured poses, keep their input order)."""
    order = sorted(range(len(a)), key=a.__getitem__)
    out = [0.0] * len(a)
    for r, i in enumerate(order):
        out[i] = float(r)
    return out


def _spearman(a: list[float], b: list[float]) -> float | None:
    return _pearson(_ranks(a), _ranks(b)) if len(a) >= 3 else None


def scene_probe(pred_c2w: Tensor, true_c2w: Tensor, num_context: int) -> dict[str, list[float]]:
    """One scene's per-view values. pred_c2w, true_c2w: (V, 4, 4), context views first.
    -> lists over views 1..V-1 (``yaw_*``, ``angle_*``) and over the targets (``progress_*``; empty with one
    context view, or when the context views share a centre)."""
    p = relative_c2w(pred_c2w.double()[None])[0]  # (V, 4, 4), view 0 = identity
    g = relative_c2w(true_c2w.double()[None])[0]
    eye = torch.eye(3, dtype=torch.float64)
    out = {"yaw_pred": yaw_deg(p[1:, :3, :3]).tolist(), "yaw_true": yaw_deg(g[1:, :3, :3]).tolist(),
           "angle_pred": rotation_angle_deg(eye, p[1:, :3, :3]).tolist(),
           "angle_true": rotation_angle_deg(eye, g[1:, :3, :3]).tolist(),
           "error": rotation_angle_deg(p[1:, :3, :3], g[1:, :3, :3]).tolist(),
           "progress_true": [], "progress_step": [], "progress_turn": []}
    last = num_context - 1
    base_true, base_pred = g[last, :3, 3], p[last, :3, 3]
    if last < 1 or float(base_true @ base_true) < 1e-12 or float(base_pred @ base_pred) < 1e-12:
        return out
    turn_last = out["angle_pred"][last - 1]
    for v in range(num_context, p.shape[0]):
        out["progress_true"].append(float(g[v, :3, 3] @ base_true / (base_true @ base_true)))
        out["progress_step"].append(float(p[v, :3, 3] @ base_pred / (base_pred @ base_pred)))
        out["progress_turn"].append(out["angle_pred"][v - 1] / turn_last if turn_last >= MIN_BASELINE_TURN_DEG
                                    else float("nan"))
    return out


def summarise(scenes: list[dict[str, list[float]]]) -> dict:
    """Pool :func:`scene_probe` results over scenes -> the probe's figures (None where undefined)."""
    def pooled(key):
        return [v for s in scenes for v in s[key]]

    yp, yt, ap, at = pooled("yaw_pred"), pooled("yaw_true"), pooled("angle_pred"), pooled("angle_true")
    turning = [i for i, a in enumerate(at) if a >= MIN_TURN_DEG]
    yawing = [i for i, y in enumerate(yt) if abs(y) >= MIN_TURN_DEG]
    pt, ps = pooled("progress_true"), pooled("progress_step")
    turn = [(t, u) for t, u in zip(pt, pooled("progress_turn"), strict=True) if u == u]  # NaN: no scale
    return {
        "scenes": len(scenes),
        "views": len(yt),
        "rotation_error_deg": statistics.fmean(pooled("error")) if yt else None,
        "identity_rotation_error_deg": statistics.fmean(at) if yt else None,
        "yaw_corr": _pearson(yp, yt),
        "yaw_sign_agreement": (sum(yp[i] * yt[i] > 0 for i in yawing) / len(yawing)) if yawing else None,
        "rotation_size_ratio": statistics.median(ap[i] / at[i] for i in turning) if turning else None,
        "true_turn_deg_median": statistics.median(at[i] for i in turning) if turning else None,
        "progress_step_rank_corr": _spearman(ps, pt),
        "progress_turn_rank_corr": _spearman([u for _, u in turn], [t for t, _ in turn]),
    }


def _step_x(dist: Tensor) -> Tensor:
    """A step of ``dist`` along the camera's own x axis, as a right-multiplied pose. dist: () -> (4, 4)."""
    return make_pose(torch.eye(3, dtype=dist.dtype), torch.stack([dist, dist * 0, dist * 0]))


@torch.no_grad()
def renderer_sensitivity(pipe, item: dict, out: dict, turn_deg: float, step: float) -> dict[str, float]:
    """How the renders of one scene change when the target cameras turn by +-``turn_deg`` about their own vertical
    axis, step +-``step`` x the context baseline along their own x axis, or all take the first context view's camera.
    item: the dataset sample; out: the :meth:`Pipeline.run` prediction for it.
    -> {turn|step|first_view}_{change (0-255 levels), psnr_drop (dB)}."""
    vc = pipe.num_context
    c2w, k = out["cameras"]["c2w"][:, vc:].float(), out["cameras"]["fxfycxcy"][:, vc:].float()  # (1, Vt, 4, 4)
    targets = item["images"][vc:].float()  # (Vt, 3, H, W)
    base = out["renders"][0].float().cpu().clamp(0, 1)
    base_psnr = float(psnr_full(base, targets).mean())
    centres = out["cameras"]["c2w"][0, :vc, :3, 3].float()
    baseline = (centres[-1] - centres[0]).norm().cpu()
    moves = {"turn": [make_pose(yaw_matrix(torch.tensor(s * turn_deg)), torch.zeros(3)) for s in (1, -1)],
             "step": [_step_x(s * step * baseline) for s in (1, -1)]}
    cams = {name: [c2w @ m.to(c2w) for m in mats] for name, mats in moves.items()}
    cams["first_view"] = [out["cameras"]["c2w"][:, :1].float().expand_as(c2w)]  # every target at the first view
    result = {}
    for name, poses in cams.items():
        change, drop = [], []
        for pose in poses:
            r = pipe.render(out["scene_tokens"], pose, k)[0].float().cpu()
            change.append(float((r - base).abs().mean()) * 255.0)
            drop.append(base_psnr - float(psnr_full(r, targets).mean()))
        result[f"{name}_change"], result[f"{name}_psnr_drop"] = statistics.fmean(change), statistics.fmean(drop)
    return result


@torch.no_grad()
def pose_probe(pipe, dataset, max_scenes: int = 0, progress: bool = True, turn_deg: float = 10.0,
               step: float = 0.25, sensitivity: bool = True) -> dict:
    """pipe: a loaded :class:`Pipeline`; dataset: eval items with the dataset's cameras (``c2w``), e.g. the synthetic
    static test. -> :func:`summarise`'s figures, plus the mean ``sensitivity`` figures when asked for and the
    predicted cameras' own rotation error against identity's."""
    if len(dataset) == 0:
        raise UserError("poses: the dataset has no scenes")
    if "c2w" not in dataset[0]:
        raise UserError("poses: the dataset has no cameras to compare with (c2w); use a set with metadata, e.g. "
                        "data/synthetic/re10k_processed_v2")
    scenes, sens, follows = [], [], {"image": [], "slot": []}
    for i in scene_indices(dataset, max_scenes, progress, "poses"):
        item = dataset[i]
        out = pipe.run(item["images"][None], cameras=item_cameras(pipe.model, item, pipe.device), apply_mae=False)
        scenes.append(scene_probe(out["cameras"]["c2w"][0].cpu(), item["c2w"], pipe.num_context))
        if item["images"].shape[0] > pipe.num_context + 1:
            for k, r in order_follows(pipe, item, scenes[-1]["progress_step"]).items():
                if r is not None:
                    follows[k].append(r)
        if sensitivity and item["images"].shape[0] > pipe.num_context:
            sens.append(renderer_sensitivity(pipe, item, out, turn_deg, step))
    result = summarise(scenes)
    result.update({f"order_follows_{k}": statistics.fmean(v) if v else None for k, v in follows.items()})
    if sens:
        result.update({k: statistics.fmean(s[k] for s in sens) for k in sens[0]})
    return result


@torch.no_grad()
def order_follows(pipe, item: dict, places: list[float]) -> dict[str, float | None]:
    """Do the predicted cameras follow the target images or their slots? The targets are fed again in reverse order;
    -> Pearson correlation over the targets of each one's predicted place (``places``: :func:`scene_probe`'s
    ``progress_step`` in the given order) with the place predicted for the same image (``image``) and for the same
    slot (``slot``) in the reversed run. An estimator that reads the images scores image = 1; one that has learned a
    pose per slot (the slot index carries the time order when the targets are always sorted) scores slot = 1."""
    vc = pipe.num_context
    order = list(range(vc)) + list(range(item["images"].shape[0] - 1, vc - 1, -1))
    item_rev = {k: item[k][order] for k in ("images", "c2w", "fxfycxcy") if k in item}
    out = pipe.run(item_rev["images"][None], cameras=item_cameras(pipe.model, item_rev, pipe.device), apply_mae=False)
    rev = scene_probe(out["cameras"]["c2w"][0].cpu(), item_rev["c2w"], vc)["progress_step"]
    if len(rev) != len(places) or not places:
        return {"image": None, "slot": None}
    return {"image": _pearson(places, rev[::-1]), "slot": _pearson(places, rev)}
