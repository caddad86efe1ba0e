"""VGG-19 perceptual loss in plain torch (no torchvision), loading a torchvision-format state dict from a local file.

The loss follows the "perceptual loss" used by LVSM/RayZer (Chen & Koltun's cascaded-refinement weights): L1 between
images plus L1 between VGG-19 features at relu1_2, relu2_2, relu3_2, relu4_2 and relu5_2, weighted 1/2.6, 1/4.8,
1/3.7, 1/5.6 and 10/1.5, on ImageNet-normalised inputs. The weights cannot be downloaded here: pass the path of
torchvision's ``vgg19`` state dict (``features.<i>.weight`` / ``features.<i>.bias`` keys; ``classifier.*`` ignored).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..errors import CheckpointError

# torchvision's VGG-19 ("E") feature layout; "M" = 2x2 max-pool. Module indices match torchvision's ``features``.
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
_TAPS = {3: 1 / 2.6, 8: 1 / 4.8, 13: 1 / 3.7, 22: 1 / 5.6, 31: 10 / 1.5}  # relu1_2, relu2_2, relu3_2, relu4_2, relu5_2
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def vgg19_features(last_index: int = max(_TAPS)) -> nn.Sequential:
    """torchvision-compatible ``vgg19().features`` truncated after module ``last_index``."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in _VGG19:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=False)]
            c_in = v
    return nn.Sequential(*layers[: last_index + 1])


class PerceptualLoss(nn.Module):
    """Frozen VGG-19 feature loss. Build with :meth:`from_file`; parameters never require grad."""

    def __init__(self):
        super().__init__()
        self.features = vgg19_features()
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path) -> PerceptualLoss:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"training.perceptual_weights_path: no file {path} (torchvision vgg19 state dict)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is a user error here
            raise CheckpointError(f"training.perceptual_weights_path: cannot read {path} ({type(e).__name__})") from e
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        loss = cls()
        loss.load_torchvision_state(state, str(path))
        return loss

    def load_torchvision_state(self, state: dict, where: str = "state dict") -> None:
        own = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        if not isinstance(state, dict):
            raise CheckpointError(f"{where} is not a VGG-19 state dict")
        missing = [k for k in own if k not in state]
        bad = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
               if k in state and tuple(state[k].shape) != tuple(v.shape)]
        if missing or bad:
            raise CheckpointError(f"{where} is not a torchvision VGG-19 state dict: "
                                  f"missing {missing[:3]} shape mismatches {bad[:3]}")
        self.features.load_state_dict({k[len("features."):]: state[k] for k in own})

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        """pred, target: (N, 3, H, W) in [0, 1]; mask: (N, 1, H, W) weights (1 = counted) -> scalar loss."""
        x = (pred.float() - self.mean) / self.std
        y = (target.float() - self.mean) / self.std
        loss = _weighted_l1(pred.float(), target.float(), mask)
        for i, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if i in _TAPS:
                m = None if mask is None else F.interpolate(mask.float(), size=x.shape[-2:], mode="area")
                loss = loss + _TAPS[i] * _weighted_l1(x, y, m)
        return loss


def _weighted_l1(a: Tensor, b: Tensor, mask: Tensor | None) -> Tensor:
    """a, b: (N, C, H, W); mask: (N, 1, H, W) or None -> mean |a - b| over counted pixels and channels."""
    err = (a - b).abs()
    if mask is None:
        return err.mean()
    w = mask.expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1.0)


def flatten_views(x: Tensor) -> Tensor:
    """x: (B, T, C, H, W) -> (B*T, C, H, W)."""
    return rearrange(x, "b t c h w -> (b t) c h w")
