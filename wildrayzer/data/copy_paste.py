"""Copy-paste transients (stages 2-3; stage 1's camera views with ``training.camera_paste``): COCO instance cut-outs
pasted onto views with an exact paste mask.

Works on any COCO ``instances_*.json`` (polygon and RLE segmentations, via pycocotools): the real
``data/coco/train2014`` + ``annotations/instances_train2014.json`` or the embedded synthetic set. Crowd annotations
and instances smaller than ``copy_paste.min_area`` pixels are ignored. Each pasted view gets the same chosen
instances at independent random positions, scales and flips, so they behave like objects moving between views
(``copy_paste.motion=jump``), or, with ``glide``, each instance moves along a straight path through the sample's
frames.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from .frames import READ_ERRORS, read_rgb


class CopyPaste:
    """``CopyPaste(cfg.copy_paste)(images, rng) -> (images, paste_mask)``."""

    def __init__(self, cp_cfg, seed: int = 0, cache_size: int = 256):
        from pycocotools.coco import COCO

        self.cfg = cp_cfg
        ann_file, self.image_dir = Path(cp_cfg.annotation_file), Path(cp_cfg.image_dir)
        if not ann_file.is_file():
            raise DataError(f"copy-paste annotations {ann_file} not found; set copy_paste.annotation_file or run "
                            f"'wildrayzer data synth' (writes data/synthetic/coco)")
        if not self.image_dir.is_dir():
            raise DataError(f"copy-paste image directory {self.image_dir} not found; set copy_paste.image_dir")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                self.coco = COCO(str(ann_file))
        except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError) as e:
            raise DataError(f"copy-paste annotations {ann_file} are not COCO instances JSON "
                            f"({e.__class__.__name__}); fix or regenerate the file") from None
        self.ann_ids = sorted(a["id"] for a in self.coco.dataset.get("annotations", [])
                              if not a.get("iscrowd", 0) and a.get("area", 0) >= cp_cfg.min_area
                              and a.get("segmentation"))
        if not self.ann_ids:
            raise DataError(f"copy-paste annotations {ann_file} have no non-crowd instance with area >= "
                            f"copy_paste.min_area={cp_cfg.min_area}")
        self.rng = np.random.default_rng(seed)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._cache_size = cache_size

    def instance(self, ann_id: int) -> tuple[np.ndarray, np.ndarray]:
        """-> cut-out rgb (h, w, 3) float32 in [0, 1] and its mask (h, w) bool, cropped to the mask's bounding box."""
        if ann_id in self._cache:
            return self._cache[ann_id]
        ann = self.coco.anns[ann_id]
        info = self.coco.imgs[ann["image_id"]]
        path = self.image_dir / info["file_name"]
        try:
            img = read_rgb(path)
        except FileNotFoundError:
            raise DataError(f"copy-paste image {path} (annotation {ann_id}) is missing; check copy_paste.image_dir") \
                from None
        except READ_ERRORS as e:
            raise DataError(f"copy-paste image {path} cannot be read ({e.__class__.__name__})") from None
        with warnings.catch_warnings():  # pycocotools' decode predates numpy 2's __array__ copy keyword
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = self.coco.annToMask(ann).astype(bool)
        if mask.shape != img.shape[:2]:
            raise DataError(f"copy-paste annotation {ann_id}: mask {mask.shape} does not match image {path} "
                            f"{img.shape[:2]}; the annotation file does not belong to these images")
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        out = (img[y0:y1, x0:x1].astype(np.float32) / 255.0, mask[y0:y1, x0:x1])
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[ann_id] = out
        return out

    @staticmethod
    def paste(image: Tensor, rgb: np.ndarray, mask: np.ndarray, height: int, left: int, top: int, flip: bool) -> Tensor:
        """Paste one cut-out in place. image: (3, H, W); rgb: (h, w, 3); mask: (h, w) bool; the cut-out is resized
        to ``height`` pixels tall and placed with its top-left corner at (left, top) (may hang over the border).
        -> the pasted pixels as a (H, W) bool tensor."""
        h, w = mask.shape
        new_h = max(1, int(height))
        new_w = max(1, round(w * new_h / h))
        flag = cv2.INTER_AREA if new_h < h else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (new_w, new_h), interpolation=flag).reshape(new_h, new_w, 3)
        m = cv2.resize(mask.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST).astype(bool)
        if flip:
            rgb, m = rgb[:, ::-1], m[:, ::-1]
        H, W = image.shape[-2:]
        ys, xs = slice(max(top, 0), min(top + new_h, H)), slice(max(left, 0), min(left + new_w, W))
        pasted = torch.zeros(H, W, dtype=torch.bool)
        if ys.start >= ys.stop or xs.start >= xs.stop:
            return pasted
        src = (slice(ys.start - top, ys.stop - top), slice(xs.start - left, xs.stop - left))
        sub_m = torch.from_numpy(np.ascontiguousarray(m[src]))
        sub_rgb = torch.from_numpy(np.ascontiguousarray(rgb[src]))
        region = image[:, ys, xs]
        region[:, sub_m] = sub_rgb[sub_m].T.to(image.dtype)
        pasted[ys, xs] = sub_m
        return pasted

    def __call__(self, images: Tensor, rng: np.random.Generator | int | None = None,
                 force: bool = False, frame_idx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """images: (..., 3, H, W) in [0, 1] (e.g. the context views of one sample, (Vc, 3, H, W)).

        With probability ``copy_paste.probability`` (always when ``force``) choose 1..max_objects instances and paste
        them onto every image: at independent random positions/scales/flips (``copy_paste.motion=jump``), or
        (``glide``: an object moving through the views, as a walking person does) each instance along a straight
        path, position and scale interpolated between two random draws by the image's place in the sample's frame
        span, from ``frame_idx`` (..., the images' frame numbers; jump ignores it). -> (new images, paste mask
        (..., 1, H, W) float32 in {0, 1}); the input is not modified."""
        if isinstance(rng, int) or rng is None:
            rng = self.rng if rng is None else np.random.default_rng(rng)
        lead, (H, W) = images.shape[:-3], images.shape[-2:]
        flat = images.reshape(-1, 3, H, W).clone()
        mask = torch.zeros(flat.shape[0], 1, H, W, dtype=torch.float32)
        times = None
        if self.cfg.motion == "glide":
            if frame_idx is None or frame_idx.numel() != flat.shape[0]:
                got = "none" if frame_idx is None else frame_idx.numel()
                raise ValueError(f"copy_paste.motion=glide needs one frame_idx per image: {got} for {flat.shape[0]}")
            f = frame_idx.detach().cpu().reshape(-1).double()
            times = (f - f.min()) / (f.max() - f.min()).clamp(min=1)  # (N,) in [0, 1]
        if not force and rng.random() >= self.cfg.probability:
            return flat.reshape(images.shape), mask.reshape(*lead, 1, H, W)
        count = int(rng.integers(1, max(1, self.cfg.max_objects) + 1))
        chosen = [int(self.ann_ids[k]) for k in rng.choice(len(self.ann_ids), size=count)]
        paths = [(self._placement(ann_id, rng, H, W), self._placement(ann_id, rng, H, W), bool(rng.random() < 0.5))
                 for ann_id in chosen] if times is not None else None
        for v in range(flat.shape[0]):
            for k, ann_id in enumerate(chosen):
                rgb, m = self.instance(ann_id)
                if paths is None:
                    (height, left, top), flip = self._placement(ann_id, rng, H, W), bool(rng.random() < 0.5)
                else:
                    (start, end, flip), t = paths[k], float(times[v])
                    height, left, top = (int(round(a + t * (b - a))) for a, b in zip(start, end))
                pasted = self.paste(flat[v], rgb, m, height, left, top, flip)
                mask[v, 0] = torch.maximum(mask[v, 0], pasted.float())
        return flat.reshape(images.shape), mask.reshape(*lead, 1, H, W)

    def _placement(self, ann_id: int, rng: np.random.Generator, H: int, W: int) -> tuple[int, int, int]:
        """A random (height, left, top) of instance ``ann_id`` in an H x W image: its height a uniform fraction
        of H in [min_scale, max_scale], at least half of it inside the image."""
        m = self.instance(ann_id)[1]
        height = int(round(rng.uniform(self.cfg.min_scale, self.cfg.max_scale) * H))
        width = max(1, round(m.shape[1] * height / m.shape[0]))
        left = int(rng.integers(-width // 2, W - width // 2 + 1))
        top = int(rng.integers(-height // 2, H - height // 2 + 1))
        return height, left, top
