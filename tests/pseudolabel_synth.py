"""Synthetic pseudo-label scenes with known motion masks (for the constructor's tests and benchmark).

A static scene is a natural photo bundled with scikit-image, seen through a sliding crop window (camera motion). The
"static render" of a frame is that crop, slightly blurred and colour-shifted like a real static-model render; the
"photo" is the same crop with a moving textured object (a blob cut from another photo) pasted on it, plus sensor
noise. The pasted blob's alpha is the ground-truth motion mask.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skdata
from torch import Tensor

from wildrayzer.pseudolabel.constructor import gaussian_blur

BACKGROUNDS = ("astronaut", "coffee", "rocket", "immunohistochemistry", "brick", "grass", "gravel")
OBJECTS = ("chelsea", "coffee", "astronaut", "rocket")


def _photo(name: str) -> Tensor:
    """-> (3, H, W) float in [0, 1]."""
    img = getattr(skdata, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1).float() / 255.0


def _blob(size: int, gen: torch.Generator) -> Tensor:
    """A random smooth star-convex blob filling most of a size x size box. -> (size, size) float {0, 1}."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    ang, rad = torch.atan2(yy, xx), torch.sqrt(xx**2 + yy**2)
    r = torch.full_like(ang, 0.75)
    for f in (2, 3, 5):
        amp, phase = 0.12 * torch.rand(1, generator=gen), 6.283 * torch.rand(1, generator=gen)
        r = r + amp * torch.sin(f * ang + phase)
    return (rad < r).float()


def make_scene(size: int = 128, frames: int = 6, seed: int = 0, moving_object: bool = True,
               background: str | None = None, render_blur: float = 0.8, noise: float = 0.02) -> dict[str, Tensor]:
    """-> {"photos": (T, 3, S, S), "renders": (T, 3, S, S), "masks": (T, 1, S, S) in {0, 1}} (float32).

    The object (about a third of the image side) moves across the frame while the camera pans slowly.
    """
    gen = torch.Generator().manual_seed(seed)
    pick = int(torch.randint(len(BACKGROUNDS), (1,), generator=gen))
    bg = _photo(background or BACKGROUNDS[pick])
    _, bh, bw = bg.shape
    crop = int(min(bh, bw) * 0.7)
    start = torch.rand(2, generator=gen) * torch.tensor([bh - crop, bw - crop]) * 0.5
    pan = (torch.rand(2, generator=gen) - 0.5) * 0.3 * crop / max(frames - 1, 1)
    obj_name = OBJECTS[int(torch.randint(len(OBJECTS), (1,), generator=gen))]
    obj_img = _photo(obj_name)
    osz = int(size * (0.3 + 0.1 * float(torch.rand(1, generator=gen))))
    oy, ox = (torch.rand(2, generator=gen) * torch.tensor(obj_img.shape[1:]) * 0.4).long().tolist()
    oside = int(min(obj_img.shape[1:]) * 0.5)
    obj = F.interpolate(obj_img[None, :, oy:oy + oside, ox:ox + oside], size=(osz, osz), mode="bilinear",
                        antialias=True, align_corners=False)[0]
    alpha = _blob(osz, gen)
    p0 = torch.rand(2, generator=gen) * (size - osz)
    p1 = torch.rand(2, generator=gen) * (size - osz)
    tint = 1.0 + (torch.rand(3, 1, 1, generator=gen) - 0.5) * 0.06  # a render's small colour bias
    photos, renders, masks = [], [], []
    for t in range(frames):
        y, x = (start + pan * t).clamp(min=0).long().tolist()
        view = F.interpolate(bg[None, :, y:y + crop, x:x + crop], size=(size, size), mode="bilinear",
                             antialias=True, align_corners=False)[0]
        mask = torch.zeros(1, size, size)
        photo = view.clone()
        if moving_object:
            a = t / max(frames - 1, 1)
            py, px = ((1 - a) * p0 + a * p1).long().tolist()
            mask[0, py:py + osz, px:px + osz] = alpha
            photo[:, py:py + osz, px:px + osz] = alpha * obj + (1 - alpha) * view[:, py:py + osz, px:px + osz]
        photos.append((photo + noise * torch.randn(photo.shape, generator=gen)).clamp(0, 1))
        renders.append((gaussian_blur(view[None], render_blur)[0] * tint).clamp(0, 1))
        masks.append(mask)
    return {"photos": torch.stack(photos), "renders": torch.stack(renders), "masks": torch.stack(masks)}


def mask_iou(pred: Tensor, gt: Tensor) -> float:
    """pred, gt: (..., H, W) {0, 1} -> intersection over union over all pixels (1.0 when both are empty)."""
    p, g = pred > 0.5, gt > 0.5
    union = (p | g).sum().item()
    return 1.0 if union == 0 else (p & g).sum().item() / union
