"""Python API in the Hugging Face style::

    from wildrayzer import WildRayZer
    model = WildRayZer.from_pretrained("checkpoints/wildrayzer_tiny_2view")   # local dir or hub id (offline cache)
    out = model.predict(images)            # list of PIL / numpy / tensor images, any size (centre-cropped, resized)
    out["cameras"], out["motion_masks"]
    views = model.render(out, c2w, fxfycxcy)

Loads the config stored with the checkpoint. Inputs are checked, and a bad one is a one-line UserError: a wrong
number of images, an empty image, a non-numeric dtype, NaN, floats outside [0, 1] (uint8 is /255, uint16 /65535;
float images are never rescaled by guessing), an image above MAX_IMAGE_PIXELS (100 MP), non-finite or non-rigid
cameras, fxfycxcy <= 0, more than MAX_RENDER_VIEWS cameras per call, and an interpolate count that is not an integer
in 2..MAX_RENDER_VIEWS. PIL images of any mode (16-bit grayscale included) are read as the data loader reads files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .data.frames import READ_ERRORS, check_image_pixels, pil_rgb
from .errors import CheckpointError, UserError
from .image_ops import resize_images
from .infer.pipeline import Pipeline

# A float image must lie in [0, 1]; values this far outside (resampling overshoot) are clamped, larger ones refused.
FLOAT_TOLERANCE = 1e-3
MAX_RENDER_VIEWS = 4096  # cameras per render() / interpolate() call: 4096 views at 256 px are 3.2 GB of output
_TENSOR_KINDS = {torch.uint8: "uint8", **({torch.uint16: "uint16"} if hasattr(torch, "uint16") else {})}


def _image_error(index: int, problem: str) -> UserError:
    return UserError(f"image {index}: {problem}")


def _check_size(index: int, height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise _image_error(index, f"is empty ({height}x{width} pixels)")
    check_image_pixels(width, height, f"image {index}", UserError)


def _from_pil(index: int, img) -> Tensor:
    _check_size(index, img.height, img.width)
    try:  # a lazily opened image decodes here: its file may be truncated, corrupt, gone or closed
        img.load()
        rgb = pil_rgb(img)  # 16-bit modes as the loader reads them
    except (*READ_ERRORS, AttributeError) as e:
        msg = " ".join(str(e).split())[:120]
        raise _image_error(index, f"the PIL image cannot be decoded ({type(e).__name__}: {msg})") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0


def _scale(index: int, t: Tensor, kind: str) -> Tensor:
    """t: float tensor holding the raw values of an image of dtype ``kind`` -> values in [0, 1]."""
    if kind == "uint8":
        return t / 255.0
    if kind == "uint16":
        return t / 65535.0
    if not bool(torch.isfinite(t).all()):
        raise _image_error(index, "holds NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < -FLOAT_TOLERANCE or hi > 1 + FLOAT_TOLERANCE:
        hint = "; divide by 255 (or pass uint8)" if hi <= 255 + FLOAT_TOLERANCE and lo >= -FLOAT_TOLERANCE else ""
        raise _image_error(index, f"float values must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]{hint}")
    return t


def _to_chw(img, index: int = 0) -> Tensor:
    """PIL image, (H, W[, C]) array or (C, H, W) / (H, W) tensor -> float (3, H, W) in [0, 1].

    uint8 is /255, uint16 /65535, floats must already lie in [0, 1] (NaN, infinity and other ranges are refused
    rather than guessed); PIL images of any mode are read as the data loader reads files (16-bit grayscale scaled
    by its maximum). Empty images, non-numeric dtypes and images above MAX_IMAGE_PIXELS are a UserError."""
    if isinstance(img, (str, os.PathLike)):
        raise _image_error(index, f"got the path {str(img)!r}; pass the image itself (e.g. PIL.Image.open(path))")
    if hasattr(img, "convert") and hasattr(img, "mode"):
        return _from_pil(index, img)
    if isinstance(img, Tensor):
        if img.dim() == 2:
            img = img[None]
        if img.dim() != 3 or img.shape[0] not in (1, 3, 4):
            raise _image_error(index, f"tensor images must be (C, H, W) with C in 1, 3, 4; got {tuple(img.shape)}")
        _check_size(index, img.shape[1], img.shape[2])
        kind = _TENSOR_KINDS.get(img.dtype)
        if kind is None and not img.is_floating_point():
            raise _image_error(index, f"tensor dtype {str(img.dtype).replace('torch.', '')} is not an image type "
                                      "(use uint8, or float in [0, 1])")
        t = _scale(index, img.detach().cpu().float(), kind or "float")
    else:
        try:
            arr = np.asarray(img)
        except Exception as e:  # noqa: BLE001 - ragged nested lists and odd objects fail in many ways
            raise _image_error(index, f"cannot be read as an array ({type(e).__name__})") from None
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise _image_error(index, f"images must be (H, W[, C]) with C in 1, 3, 4; got shape {arr.shape}")
        _check_size(index, arr.shape[0], arr.shape[1])
        if arr.dtype == np.uint8 or arr.dtype == np.uint16:
            kind = str(arr.dtype)
        elif arr.dtype.kind == "f":
            kind = "float"
        else:
            raise _image_error(index, f"array dtype {arr.dtype} is not an image type (use uint8, uint16, or float "
                                      "in [0, 1])")
        t = _scale(index, torch.tensor(arr, dtype=torch.float32).permute(2, 0, 1), kind)  # a copy
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t[:3].clamp(0, 1)


def prepare_images(images, size: int) -> Tensor:
    """A non-empty list of images of any sizes -> (V, 3, size, size): centre crop to square, then resize
    (antialiased). See :func:`_to_chw` for the accepted types and values."""
    if isinstance(images, (Tensor, np.ndarray)) and images.ndim == 4:
        images = list(images)
    if not isinstance(images, (list, tuple)) or not images:
        raise UserError("expected a non-empty list of images (PIL images, (H, W[, C]) arrays or (C, H, W) tensors)")
    out = []
    for i, img in enumerate(images):
        t = _to_chw(img, i)
        h, w = t.shape[-2:]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        out.append(resize_images(t[None, :, top: top + s, left: left + s], size, size)[0])
    return torch.stack(out).clamp(0, 1)


def _cameras(c2w, fxfycxcy, what: str = "render") -> tuple[Tensor, Tensor]:
    """c2w: (T, 4, 4) or (4, 4), fxfycxcy: (T, 4) or (4,) -> checked float32 (T, 4, 4), (T, 4)."""
    try:
        c2w = torch.as_tensor(np.asarray(c2w, dtype=np.float64) if not isinstance(c2w, Tensor) else c2w,
                              dtype=torch.float32)
        k = torch.as_tensor(np.asarray(fxfycxcy, dtype=np.float64) if not isinstance(fxfycxcy, Tensor) else fxfycxcy,
                            dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{what}: c2w and fxfycxcy must be numeric arrays ({type(e).__name__})") from None
    if c2w.dim() == 2:
        c2w, k = c2w[None], k.reshape(1, -1)
    if c2w.dim() != 3 or c2w.shape[1:] != (4, 4) or k.shape != (c2w.shape[0], 4):
        raise UserError(f"{what}: expected c2w (T, 4, 4) and fxfycxcy (T, 4); got {tuple(c2w.shape)} and "
                        f"{tuple(k.shape)}")
    if c2w.shape[0] < 1 or c2w.shape[0] > MAX_RENDER_VIEWS:
        raise UserError(f"{what}: {c2w.shape[0]} cameras; one call renders 1 to {MAX_RENDER_VIEWS} (MAX_RENDER_VIEWS)")
    if not (bool(torch.isfinite(c2w).all()) and bool(torch.isfinite(k).all())):
        raise UserError(f"{what}: c2w or fxfycxcy holds NaN or infinite values")
    if bool((k <= 0).any()):
        raise UserError(f"{what}: fxfycxcy must be positive pixels; got {k[(k <= 0).any(1)][0].tolist()}")
    rot = c2w[:, :3, :3].double()
    err = (rot.transpose(1, 2) @ rot - torch.eye(3, dtype=torch.float64)).abs().amax(dim=(1, 2))
    if bool((err > 1e-3).any()):
        i = int((err > 1e-3).nonzero()[0])
        raise UserError(f"{what}: camera {i} is not a rigid pose (rotation block off orthonormal by {float(err[i]):.3g}"
                        "; singular or scaled)")
    return c2w, k


def _release_file(folder: Path) -> Path:
    """A folder without ``model.safetensors`` that holds exactly one release checkpoint (the authors' hub repo
    ``uva-cv-lab/wildrayzer-2view`` holds ``wildrayzer_2view.pt``) -> that file; else the folder itself."""
    from .official.convert import is_official_file

    if folder.is_dir() and not (folder / "model.safetensors").exists():
        found = [p for p in folder.iterdir() if p.is_file() and is_official_file(p)]
        if len(found) == 1:
            return found[0]
    return folder


def _resolve_pretrained(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.exists():
        return _release_file(p)
    if str(name_or_path).count("/") == 1 and not str(name_or_path).startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download

            return _release_file(Path(snapshot_download(str(name_or_path), local_files_only=True)))
        except Exception as e:  # noqa: BLE001 - offline cache miss has several exception types
            raise CheckpointError(f"'{name_or_path}' is neither a local path nor a model in the Hugging Face cache "
                                  f"({type(e).__name__}); download it first with `huggingface-cli download "
                                  f"{name_or_path}` on a machine with internet") from None
    raise CheckpointError(f"pretrained model not found: {name_or_path}")


class WildRayZer:
    """A loaded WildRayZer ready for prediction (wraps :class:`~wildrayzer.infer.pipeline.Pipeline`)."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str = "auto") -> WildRayZer:
        """A pretrained dir (``model.safetensors`` + ``config.yaml``), a weights file, a run dir, or a hub id that
        is already in the local Hugging Face cache (no download happens here)."""
        return cls(Pipeline.load(_resolve_pretrained(name_or_path), device=device))

    @property
    def config(self):
        return self.pipeline.config

    @property
    def num_context_views(self) -> int:
        return self.pipeline.num_context

    @property
    def image_size(self) -> int:
        return self.pipeline.image_size

    def predict(self, images, c2w=None, fxfycxcy=None) -> dict:
        """images: the ``num_context_views`` input photos of one scene (list of PIL / numpy / tensor, any size).
        c2w: (V, 4, 4) and fxfycxcy: (V, 4) pixels at ``image_size``: known cameras, required by a posed checkpoint
        (``model.cameras=given``) and used instead of the estimator's by any other.

        Returns ``cameras`` {"c2w": (V, 4, 4) relative to view 0, "fxfycxcy": (V, 4) pixels at ``image_size``},
        ``motion_masks`` (V, 1, S, S) probabilities or None, ``images`` (V, 3, S, S) as the model saw them and
        ``scene_tokens`` (1, L, D) for :meth:`render`.
        """
        if isinstance(images, (Tensor, np.ndarray)) and images.ndim == 4:  # (V, C, H, W) tensor / (V, H, W, C) array
            images = list(images)
        if not isinstance(images, (list, tuple)):
            raise UserError(f"predict() takes a list of images ({self.num_context_views}); got {type(images).__name__}")
        if len(images) != self.num_context_views:
            raise UserError(f"this model takes {self.num_context_views} input views; got {len(images)} images "
                            "(the view count is fixed at training time)")
        x = prepare_images(images, self.image_size)
        cams = None
        if (c2w is None) != (fxfycxcy is None):
            raise UserError("predict: give both c2w and fxfycxcy, or neither")
        if c2w is not None:
            c2w, k = _cameras(c2w, fxfycxcy, "predict")
            if c2w.shape[0] != self.num_context_views:
                raise UserError(f"predict: {c2w.shape[0]} cameras for {self.num_context_views} input views")
            cams = {"c2w": c2w[None], "fxfycxcy": k[None]}
        elif self.pipeline.posed:
            raise UserError("predict: this checkpoint was trained with known cameras (model.cameras=given): pass "
                            "c2w (V, 4, 4) and fxfycxcy (V, 4) of the input views")
        out = self.pipeline.run(x[None], cameras=cams)
        probs = out["motion_probs"]
        return {"cameras": {"c2w": out["cameras"]["c2w"][0].cpu(), "fxfycxcy": out["cameras"]["fxfycxcy"][0].cpu()},
                "motion_masks": probs[0].cpu() if probs is not None else None,
                "token_mask": out["token_mask"][0].cpu() if out.get("token_mask") is not None else None,
                "images": x, "scene_tokens": out["scene_tokens"]}

    def render(self, prediction: dict, c2w: Tensor, fxfycxcy: Tensor) -> Tensor:
        """Render the static scene of ``prediction`` from cameras c2w: (T, 4, 4) (same frame as the predicted
        cameras) and fxfycxcy: (T, 4) pixels at ``image_size`` -> (T, 3, S, S) in [0, 1]."""
        tokens = self._scene_tokens(prediction)
        c2w, fxfycxcy = _cameras(c2w, fxfycxcy)
        return self.pipeline.render(tokens, c2w[None], fxfycxcy[None])[0].cpu()

    def interpolate(self, prediction: dict, num_frames: int = 24) -> Tensor:
        """Novel views along a smooth path (SLERP) through the predicted input cameras -> (T, 3, S, S);
        ``num_frames``: an integer from 2 to MAX_RENDER_VIEWS."""
        from .infer.video import camera_path

        if not isinstance(num_frames, (int, np.integer)) or isinstance(num_frames, bool) \
                or not 2 <= num_frames <= MAX_RENDER_VIEWS:
            raise UserError(f"interpolate: num_frames must be an integer from 2 to {MAX_RENDER_VIEWS}; got "
                            f"{num_frames!r}")
        self._scene_tokens(prediction)
        cams = prediction.get("cameras")
        if not isinstance(cams, dict) or "c2w" not in cams or "fxfycxcy" not in cams:
            raise UserError("interpolate: the prediction has no 'cameras'; pass the dict returned by predict()")
        c2w, k = _cameras(cams["c2w"], cams["fxfycxcy"])
        c2w, k = camera_path(c2w, k, int(num_frames))
        return self.render(prediction, c2w, k)

    def _scene_tokens(self, prediction) -> Tensor:
        tokens = prediction.get("scene_tokens") if isinstance(prediction, dict) else None
        if not isinstance(tokens, Tensor) or tokens.dim() != 3:
            raise UserError("render: the prediction has no 'scene_tokens'; pass the dict returned by predict()")
        return tokens
