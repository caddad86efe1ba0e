"""Reading frames and masks and bringing them to the model's square resolution with matching intrinsics."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..errors import DataError, UserError
from ..fileio import open_regular
from ..geometry import crop_fxfycxcy, scale_fxfycxcy

READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)
# Largest image (width x height) WildRayZer decodes, from a file or through the Python API: 100 MP, ~300 MB as RGB.
# Checked from the header, before any pixel is decoded (a small PNG can declare a huge canvas: a decompression bomb).
MAX_IMAGE_PIXELS = 100_000_000
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # 16-bit, 32-bit integer and float PIL modes


def check_image_pixels(width: int, height: int, what: str, error: type[UserError] = DataError) -> None:
    """``error`` (one line naming ``what``) when a ``width x height`` image exceeds :data:`MAX_IMAGE_PIXELS`."""
    if width * height > MAX_IMAGE_PIXELS:
        raise error(f"{what} is {width}x{height} pixels ({width * height / 1e6:.0f} MP), above the "
                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP limit (MAX_IMAGE_PIXELS); downscale it first")


@contextmanager
def open_image(path, error: type[UserError] = DataError) -> Iterator[Image.Image]:
    """The PIL image in the regular file ``path`` (header read, pixels not yet decoded). A FIFO, device or folder, and
    an image above :data:`MAX_IMAGE_PIXELS` (PIL's DecompressionBombError / Warning included), are ``error`` with
    one line naming the file; a missing file raises FileNotFoundError and an undecodable one one of READ_ERRORS."""
    with open_regular(path, "image", error) as f:
        with warnings.catch_warnings():  # PIL warns from 89 MP: within our cap that is no reason to complain
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                im = Image.open(f)
            except Image.DecompressionBombError:
                raise error(f"image {path} declares more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP (PIL's "
                            f"decompression-bomb limit), above the {MAX_IMAGE_PIXELS / 1e6:.0f} MP limit "
                            "(MAX_IMAGE_PIXELS); downscale it first") from None
        with im:
            check_image_pixels(im.width, im.height, f"image {path}", error)
            yield im


def pil_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL image (RGB, RGBA, grayscale, palette, 16-bit, 32-bit integer, float) -> (H, W, 3) uint8.

    RGBA keeps its colour channels and drops alpha (frames are photographs; alpha carries no scene content);
    grayscale is repeated over the three channels; high-bit-depth grayscale is scaled by its own maximum
    (negative values count as 0) instead of being clipped at 255 as PIL's ``convert`` does."""
    if im.mode in HIGH_BIT_MODES:
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
        arr = np.round(arr / max(float(arr.max(initial=0.0)), 1e-12 if im.mode == "F" else 1.0) * 255.0)
        return np.repeat(arr.clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def read_rgb(path) -> np.ndarray:
    """An image file PIL can read (see :func:`pil_rgb` for the modes) -> (H, W, 3) uint8."""
    with open_image(path) as im:
        im.load()
        return pil_rgb(im)


def read_mask(path) -> np.ndarray:
    """Binary mask PNG (any mode; nonzero/ >= 128 = moving) -> (H, W) float32 in {0, 1}."""
    with open_image(path) as im:
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
