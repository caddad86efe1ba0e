"""LPIPS (Zhang et al. 2018, v0.1) in plain torch, loaded only from local weight files — never approximated.

Network: torchvision's AlexNet or VGG16 ``features`` trunk (same layer indices, so torchvision state dicts load by
key), features tapped after the ReLUs LPIPS uses (AlexNet relu1..5, VGG16 relu1_2/2_2/3_3/4_3/5_3), unit-normalised
over channels, squared difference, the learned 1x1 "linear" heads, spatial mean, summed over the five layers. Inputs
are [0, 1] images (scaled to [-1, 1] and shifted/scaled like the official ``lpips`` package).

Weight files (``inference.lpips_weights_path``), read with ``torch.load(weights_only=True)`` or safetensors:

1. **A directory** holding the official ``lpips`` linear heads ``alex.pth`` and/or ``vgg.pth`` (from the ``lpips``
   package, ``lpips/weights/v0.1/``; keys ``lin0.model.1.weight`` … ``lin4.model.1.weight``, shapes ``(1, C, 1, 1)``)
   next to the torchvision ImageNet trunk: ``alexnet.pth`` / ``alexnet-owt-7be5be79.pth`` (any ``alexnet*.pth``) or
   ``vgg16.pth`` / ``vgg16-397923af.pth`` (any ``vgg16*.pth``), or ``.safetensors`` of the same. The trunk file may be
   the full torchvision model state dict (``features.*`` + ``classifier.*``; the classifier is ignored). When both
   heads are present the VGG variant is used (as in LVSM/RayZer evaluation); to pick one, give the heads file itself.
2. **A heads file** (``…/alex.pth`` or ``…/vgg.pth``): the trunk is looked up next to it as above.
3. **A single merged file** with both key sets (``features.*`` and ``lin*.model.1.weight``), e.g. ``torch.save`` of
   :meth:`LPIPS.state_dict`; the network is recognised from the first convolution's shape.

Every key is checked strictly (missing, unexpected, wrong shape) and a wrong file raises :class:`UserError`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wildrayzer.errors import UserError
from wildrayzer.fileio import check_regular_file

# torchvision `features` layouts: ("C", in, out, kernel, stride, pad) | ("R",) | ("M", kernel, stride).
_ALEX_LAYERS = [("C", 3, 64, 11, 4, 2), ("R",), ("M", 3, 2), ("C", 64, 192, 5, 1, 2), ("R",), ("M", 3, 2),
                ("C", 192, 384, 3, 1, 1), ("R",), ("C", 384, 256, 3, 1, 1), ("R",), ("C", 256, 256, 3, 1, 1), ("R",),
                ("M", 3, 2)]
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# Indices (in `features`) of the ReLUs whose outputs LPIPS compares, and their channel counts.
_TAPS = {"alex": [1, 4, 7, 9, 11], "vgg": [3, 8, 15, 22, 29]}
_CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}
_TRUNK_NAMES = {"alex": "alexnet", "vgg": "vgg16"}
_MIN_SIZE = {"alex": 31, "vgg": 16}  # smallest H, W for which the deepest tapped layer is at least 1x1
_SUFFIXES = (".pth", ".pt", ".safetensors")


def _vgg16_layers() -> list[tuple]:
    layers, c_in = [], 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(("M", 2, 2))
        else:
            layers += [("C", c_in, v, 3, 1, 1), ("R",)]
            c_in = v
    return layers


def _build_features(net: str) -> nn.Sequential:
    spec = _ALEX_LAYERS if net == "alex" else _vgg16_layers()
    mods: list[nn.Module] = []
    for s in spec:
        if s[0] == "C":
            mods.append(nn.Conv2d(s[1], s[2], kernel_size=s[3], stride=s[4], padding=s[5]))
        elif s[0] == "R":
            mods.append(nn.ReLU(inplace=False))
        else:
            mods.append(nn.MaxPool2d(kernel_size=s[1], stride=s[2]))
    return nn.Sequential(*mods)


class _LinHead(nn.Module):
    """The official ``NetLinLayer``: Dropout then a bias-free 1x1 conv to one channel (keys ``model.1.weight``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS distance. Build with :func:`load_lpips`; a bare ``LPIPS(net)`` has random weights (tests only)."""

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in _TAPS:
            raise ValueError(f"LPIPS: net must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        self.features = _build_features(net)
        for i, c in enumerate(_CHANNELS[net]):
            self.add_module(f"lin{i}", _LinHead(c))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def _taps(self, x: Tensor) -> list[Tensor]:
        """x: (N, 3, H, W) in [0, 1] -> five unit-normalised feature maps (N, C_k, h_k, w_k)."""
        h = ((2.0 * x - 1.0) - self.shift) / self.scale
        taps, last = [], _TAPS[self.net][-1]
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS[self.net]:
                taps.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
            if i == last:
                break
        return taps

    def forward(self, a: Tensor, b: Tensor, spatial: bool = False) -> Tensor:
        """a, b: (N, 3, H, W) in [0, 1] -> (N,) distances, or (N, 1, H, W) per-pixel map when ``spatial``.

        The spatial map upsamples each layer's map bilinearly to (H, W) before summing (official ``spatial=True``).
        """
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise ValueError(f"LPIPS: expected two (N, 3, H, W) images, got {tuple(a.shape)} and {tuple(b.shape)}")
        if min(a.shape[-2:]) < _MIN_SIZE[self.net]:
            raise ValueError(f"LPIPS-{self.net} needs images of at least {_MIN_SIZE[self.net]}x{_MIN_SIZE[self.net]} "
                             f"pixels, got {tuple(a.shape[-2:])}")
        out = 0.0
        for k, (fa, fb) in enumerate(zip(self._taps(a), self._taps(b))):
            d = getattr(self, f"lin{k}")((fa - fb) ** 2)  # (N, 1, h_k, w_k)
            if spatial:
                out = out + F.interpolate(d, size=a.shape[-2:], mode="bilinear", align_corners=False)
            else:
                out = out + d.mean(dim=(2, 3))
        return out if spatial else out[:, 0]


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        check_regular_file(path, "LPIPS weights", UserError)  # a FIFO would block the reader forever
    except FileNotFoundError:
        raise UserError(f"LPIPS weights {path} not found") from None
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is not a weight file
        raise UserError(f"LPIPS weights {path}: cannot read ({type(exc).__name__}: {exc}); expected a torch state "
                        "dict (.pth) or .safetensors file") from exc
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in sd.items()):
        raise UserError(f"LPIPS weights {path}: not a state dict of tensors (found {type(sd).__name__})")
    return sd


def _net_from_trunk(sd: dict[str, Tensor], path: Path) -> str:
    w = sd.get("features.0.weight")
    if w is not None and tuple(w.shape) == (64, 3, 11, 11):
        return "alex"
    if w is not None and tuple(w.shape) == (64, 3, 3, 3):
        return "vgg"
    raise UserError(f"LPIPS weights {path}: no torchvision AlexNet/VGG16 trunk ('features.0.weight' of shape "
                    f"(64, 3, 11, 11) or (64, 3, 3, 3)); see wildrayzer/infer/lpips.py for the expected files")


def _find_trunk(folder: Path, net: str, heads_path: Path) -> Path:
    stem = _TRUNK_NAMES[net]
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(stem) and p.suffix in _SUFFIXES)
    if not found:
        raise UserError(f"LPIPS weights: found heads {heads_path} but no {stem} trunk next to it; put torchvision's "
                        f"{stem} ImageNet state dict in {folder} as {stem}.pth (or {stem}-*.pth / .safetensors)")
    return found[0]


def _check_and_load(model: LPIPS, sd: dict[str, Tensor], sources: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:4]}{' …' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:4]}{' …' if len(unexpected) > 4 else ''}")
        if wrong:
            parts.append(f"wrong shapes {wrong[:3]}")
        raise UserError(f"LPIPS weights {sources} do not match LPIPS-{model.net}: {'; '.join(parts)}")
    model.load_state_dict(sd, strict=True)


def _heads_only(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keep ``lin*`` keys; accept the dropout-free variant ``linK.model.0.weight`` (1x1 conv first) too."""
    out = {}
    for k, v in sd.items():
        if k.startswith("lin") and k.endswith(".model.0.weight") and v.dim() == 4 and v.shape[0] == 1:
            k = k.replace(".model.0.", ".model.1.")
        out[k] = v
    return out


def load_lpips(path: str | Path, net: str | None = None) -> LPIPS:
    """Load LPIPS from local weights (see the module docstring for the accepted layouts).

    path: directory, heads file or merged file; net: "alex" | "vgg" to force a variant (must match the files).
    Raises :class:`UserError` for a missing path or files that do not match exactly.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"inference.lpips_weights_path: {p} does not exist (set it to '' to report LPIPS as n/a)")
    if net is not None and net not in _TAPS:
        raise UserError(f"LPIPS net must be 'alex' or 'vgg', got {net!r}")
    if p.is_dir():
        candidates = [n for n in (("vgg", "alex") if net is None else (net,))
                      for s in _SUFFIXES if (p / f"{n}{s}").is_file()]
        if not candidates:
            raise UserError(f"LPIPS weights dir {p}: no linear-head file alex.pth / vgg.pth (the official lpips "
                            "package's weights/v0.1 files) found")
        chosen = candidates[0]
        heads_path = next(p / f"{chosen}{s}" for s in _SUFFIXES if (p / f"{chosen}{s}").is_file())
        return _load_pair(heads_path, _find_trunk(p, chosen, heads_path), chosen)
    sd = _read_state_dict(p)
    if any(k.startswith("features.") for k in sd):  # merged file
        file_net = _net_from_trunk(sd, p)
        if net is not None and net != file_net:
            raise UserError(f"LPIPS weights {p} hold a {file_net} trunk but net={net!r} was requested")
        model = LPIPS(file_net)
        _check_and_load(model, _heads_only(sd), str(p))
        return model
    stem = p.name.split(".")[0]
    if stem not in _TAPS:
        raise UserError(f"LPIPS weights {p}: neither a merged LPIPS file (features.* + lin*) nor a heads file named "
                        "alex.pth / vgg.pth")
    if net is not None and net != stem:
        raise UserError(f"LPIPS weights {p} are {stem} heads but net={net!r} was requested")
    return _load_pair(p, _find_trunk(p.parent, stem, p), stem)


def _load_pair(heads_path: Path, trunk_path: Path, net: str) -> LPIPS:
    heads = _heads_only(_read_state_dict(heads_path))
    trunk = _read_state_dict(trunk_path)
    trunk_net = _net_from_trunk(trunk, trunk_path)
    if trunk_net != net:
        raise UserError(f"LPIPS weights: heads {heads_path} are for {net} but trunk {trunk_path} is {trunk_net}")
    bad_heads = [k for k in heads if not k.startswith("lin")]
    if bad_heads:
        raise UserError(f"LPIPS heads {heads_path}: unexpected keys {bad_heads[:4]} "
                        "(expected only lin*.model.1.weight)")
    trunk = {k: v for k, v in trunk.items() if not k.startswith("classifier.")}
    model = LPIPS(net)
    _check_and_load(model, {**trunk, **heads}, f"{heads_path} + {trunk_path}")
    return model


def maybe_load_lpips(path: str | Path | None) -> LPIPS | None:
    """``inference.lpips_weights_path`` -> LPIPS, or ``None`` when it is empty (LPIPS is then reported as n/a)."""
    if path is None or str(path).strip() == "":
        return None
    return load_lpips(path)
