"""Reading frames and masks and bringing them to the model's square resolution with matching intrinsics."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..geometry import crop_fxfycxcy, scale_fxfycxcy

READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)


def read_rgb(path) -> np.ndarray:
    """Any PIL-readable image (RGB, RGBA, grayscale, palette, 16-bit) -> (H, W, 3) uint8.

    RGBA keeps its colour channels and drops alpha (frames are photographs; alpha carries no scene content);
    grayscale is repeated over the three channels."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            arr = np.round(arr / max(arr.max(), 1.0) * 255.0).astype(np.uint8)
            return np.repeat(arr[..., None], 3, axis=-1)
        return np.asarray(im.convert("RGB"))


def read_mask(path) -> np.ndarray:
    """Binary mask PNG (any mode; nonzero/ >= 128 = moving) -> (H, W) float32 in {0, 1}."""
    with Image.open(path) as im:
        im.load()
        arr = np.asarray(im.convert("L"))
    return (arr >= 128).astype(np.float32)


def crop_plan(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """Resize so the shorter side is ``size`` then centre-crop ``size x size`` -> (new_h, new_w, left, top)."""
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    return new_h, new_w, (new_w - size) // 2, (new_h - size) // 2


def resize_crop(img: np.ndarray, size: int, interpolation: str = "area") -> np.ndarray:
    """img: (H, W) or (H, W, C) -> resized + centre-cropped (size, size[, C]); float32 stays float32."""
    import cv2

    h, w = img.shape[:2]
    new_h, new_w, left, top = crop_plan(h, w, size)
    if (new_h, new_w) != (h, w):
        if interpolation == "nearest":
            flag = cv2.INTER_NEAREST
        else:
            flag = cv2.INTER_AREA if new_h < h else cv2.INTER_LINEAR
        img = cv2.resize(img, (new_w, new_h), interpolation=flag)
    return img[top : top + size, left : left + size]


def adjust_intrinsics(fxfycxcy: Tensor, height: int, width: int, size: int) -> Tensor:
    """fxfycxcy: (..., 4) pixels of an ``height x width`` image -> (..., 4) after :func:`resize_crop` to ``size``."""
    new_h, new_w, left, top = crop_plan(height, width, size)
    return crop_fxfycxcy(scale_fxfycxcy(fxfycxcy, new_w / width, new_h / height), left, top)


def to_chw(img: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1).div_(255.0)
