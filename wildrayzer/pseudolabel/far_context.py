"""Labeller renders from the views farthest in time (``pseudolabel.render_from=farthest``).

A static render of a view carries whatever transients its context views hold where they stand; in a short clip the
objects move little between neighbouring frames (on the embedded dynamic test, 81 % of a frame's moving pixels are
still moving in the next frame, 30 % eight frames on), so a target rendered from context frames close to it shows
its own transient, and the render error that pseudo-labels are made of misses it. Rendering every view of a sample
from the ``num_context`` other views farthest from it in frame index keeps the render's transients away from the
view's own, and gives every view a render, context views included, so they can be labelled too
(benchmarks/RESULTS.md v2.4).

The views of a sample fall into a few groups that share their farthest views (the early frames' are the last ones
and the other way round), so a batch needs a handful of forward passes, not one per view.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def farthest_views(frame_idx: Tensor, num_context: int) -> Tensor:
    """frame_idx: (B, V) int frame numbers -> (B, V, num_context) int64: for each view, the ``num_context`` other
    views farthest from it in frame number, in increasing view index (ties: the lower view index counts as
    farther)."""
    b, v = frame_idx.shape
    if not 0 < num_context < v:
        raise ValueError(f"need 0 < num_context < V, got num_context={num_context} for V={v} views")
    f = frame_idx.long()
    dist = (f[:, :, None] - f[:, None, :]).abs()  # (B, V, V): |f_k - f_i|
    dist = dist.masked_fill(torch.eye(v, dtype=torch.bool, device=f.device), -1)  # a view never renders itself
    # farthest first, lower index first among equals: sort keys (-dist, i) -> one integer key
    key = -dist * v + torch.arange(v, device=f.device)
    return key.argsort(dim=-1)[..., :num_context].sort(dim=-1).values


def context_passes(frame_idx: Tensor, num_context: int) -> tuple[Tensor, Tensor]:
    """frame_idx: (B, V) -> orders (P, B, V) int64 and pass (B, V) int64.

    Pass p renders item b with its views in the order ``orders[p, b]``: ``num_context`` context views first, then
    the other views in their own order. ``pass[b, k]`` is the pass whose render of view k is the one from its
    farthest views (:func:`farthest_views`). P is the largest number of distinct context sets in an item; an item
    with fewer repeats its last one."""
    b, v = frame_idx.shape
    far = farthest_views(frame_idx, num_context).cpu()  # (B, V, Vc)
    sets = []  # per item: its distinct context sets, in order of first use
    which = torch.zeros(b, v, dtype=torch.long)
    for i in range(b):
        distinct: list[tuple[int, ...]] = []
        for k in range(v):
            s = tuple(far[i, k].tolist())
            if s not in distinct:
                distinct.append(s)
            which[i, k] = distinct.index(s)
        sets.append(distinct)
    passes = max(len(s) for s in sets)
    orders = torch.empty(passes, b, v, dtype=torch.long)
    for p in range(passes):
        for i in range(b):
            ctx = list(sets[i][min(p, len(sets[i]) - 1)])
            orders[p, i] = torch.tensor(ctx + [k for k in range(v) if k not in ctx])
    return orders.to(frame_idx.device), which.to(frame_idx.device)


def gather_views(x: Tensor, order: Tensor) -> Tensor:
    """x: (B, V, ...) and order (B, V') view indices -> (B, V', ...) with x[b, order[b, j]] at [b, j]."""
    idx = order.view(*order.shape, *([1] * (x.ndim - 2))).expand(*order.shape, *x.shape[2:])
    return torch.gather(x, 1, idx.to(x.device))


def gather_cameras(cameras: dict | None, order: Tensor) -> dict | None:
    """cameras {"c2w": (B, V, 4, 4), "fxfycxcy": (B, V, 4)} or None (a model that predicts them) and order (B, V')
    -> the same cameras in that view order (:func:`gather_views` per entry), or None."""
    return None if cameras is None else {k: gather_views(c, order) for k, c in cameras.items()}


def render_from_farthest(render: Callable[[Tensor], Tensor], frame_idx: Tensor, num_context: int,
                         images: Tensor) -> Tensor:
    """Every view rendered from its farthest views.

    render(order) -> (B, V - num_context, 3, H, W): the static model's renders of the views ``order[:, num_context:]``
    from the context views ``order[:, :num_context]`` (the caller gathers its images, cameras and features with
    :func:`gather_views`); frame_idx: (B, V); images: (B, V, 3, H, W), only for the output's shape and dtype
    -> renders (B, V, 3, H, W)."""
    orders, which = context_passes(frame_idx, num_context)
    out = torch.zeros_like(images)
    for p in range(orders.shape[0]):
        order = orders[p]  # (B, V)
        rendered = render(order)  # (B, V - Vc, 3, H, W) for the views order[:, Vc:]
        targets = order[:, num_context:]  # (B, V - Vc)
        take = torch.gather(which, 1, targets) == p  # (B, V - Vc): this pass holds that view's render
        for i, j in take.nonzero().tolist():
            out[i, targets[i, j]] = rendered[i, j].to(out)
    return out
