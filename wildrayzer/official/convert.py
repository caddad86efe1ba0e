"""``wildrayzer convert official CKPT.pt --out DIR``: the authors' released checkpoint -> a pretrained directory.

The release saves ``torch.save({'model': state_dict, 'optimizer', 'lr_scheduler', 'fwdbwd_pass_step',
'param_update_step'})``. It is read with ``torch.load(weights_only=True)`` only (no code runs; anything refused is a
one-line error), sizes are inferred from the tensors, the weights are mapped one to one onto this package's model
(``keys.py``), loaded strictly, and written as ``DIR/model.safetensors`` + ``DIR/config.yaml`` for
``WildRayZer.from_pretrained(DIR)``, ``inference.py`` and the demo.

``inference.model_path=…/wildrayzer_2view.pt`` converts on the fly into ``…/wildrayzer_2view.converted-<size>px/``
beside the file (reused while the source file's size and modification time are unchanged).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
from pathlib import Path

import torch

from ..errors import CheckpointError, UserError
from ..fileio import atomic_write_bytes, has_marker, open_regular
from .keys import convert_state, infer_model_config, semantic_channels

RELEASE_URL = "https://huggingface.co/uva-cv-lab/wildrayzer-2view (file wildrayzer_2view.pt)"
# DINOv3 ViT/16 checkpoints by feature width: the one whose features the motion head was trained on.
DINOV3_BY_WIDTH = {384: "facebook/dinov3-vits16-pretrain-lvd1689m", 768: "facebook/dinov3-vitb16-pretrain-lvd1689m",
                   1024: "facebook/dinov3-vitl16-pretrain-lvd1689m",
                   1280: "facebook/dinov3-vith16plus-pretrain-lvd1689m",
                   4096: "facebook/dinov3-vit7b16-pretrain-lvd1689m"}
OFFICIAL_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_MARKER = "converted_from.json"  # ownership marker (fileio.has_marker) + what was converted, for the cache
_KIND = "wildrayzer-converted-release"


def read_official_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """-> (model state dict, info {"step": int | None, "top_level": [...]}) of a release checkpoint file."""
    path = Path(path)
    try:
        f = open_regular(path, "release checkpoint", CheckpointError)
    except FileNotFoundError:
        raise CheckpointError(f"release checkpoint not found: {path}; download it from {RELEASE_URL}") from None
    try:
        with f:
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise CheckpointError(f"{path} was refused by safe loading (weights_only=True; nothing was executed): "
                              f"{why[:300]}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else 'empty'})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    state = obj.get("model", obj)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no state dict of tensors under 'model' (keys: {sorted(obj)[:6]})")
    if all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    step = obj.get("param_update_step", obj.get("fwdbwd_pass_step"))
    return state, {"step": step if isinstance(step, int) else None, "top_level": sorted(obj) if "model" in obj else []}


def official_config(state: dict[str, torch.Tensor], image_size: int = 256, context_views: int = 2,
                    target_views: int = 6, dinov3_path: str = ""):
    """The resolved config of the converted model: sizes from the tensors, the rest from the release's inference
    config (2 -> 6 views, 256 px, raw DINOv3 ViT/16 features at one cell per 16 px)."""
    from ..config import load_config

    model = infer_model_config(state)
    if image_size < model["patch_size"] or image_size % model["patch_size"]:
        raise UserError(f"--image-size {image_size} is not a positive multiple of the checkpoint's patch size "
                        f"{model['patch_size']}")
    model.update(image_size=image_size, num_context_views=context_views, num_target_views=target_views)
    overrides = [f"model.{k}={json.dumps(v)}" for k, v in model.items()]
    sem = semantic_channels(state)
    if sem:
        path = dinov3_path or DINOV3_BY_WIDTH.get(sem, "")
        overrides += ["semantic.backbone=dinov3", f"semantic.model_path={json.dumps(path)}",
                      f"semantic.feature_size={image_size // 16}", "semantic.normalize=false"]
    overrides += ["training.stage=3", "model.use_dinov3_pseudolabel=false"]
    return load_config(None, overrides)


def convert_official(ckpt: str | Path, out_dir: str | Path, image_size: int = 256, context_views: int = 2,
                     target_views: int = 6, dinov3_path: str = "", log=print) -> dict:
    """Convert ``ckpt`` into the pretrained directory ``out_dir`` -> report (sizes, dropped and filled keys)."""
    from ..model import WildRayZerModel
    from ..weights import load_state_strict, save_pretrained

    ckpt, out = Path(ckpt), Path(out_dir)
    _check_out_dir(out)
    state, info = read_official_state(ckpt)
    cfg = official_config(state, image_size, context_views, target_views, dinov3_path)
    sem = semantic_channels(state)
    model = WildRayZerModel(cfg.model, semantic_dim=sem)
    ours, report = convert_state(state, model.state_dict())
    load_state_strict(model, ours, f"converted {ckpt}")
    for name in report["filled"]:
        log(f"note: {ckpt.name} has no '{name}' (the release does not save it); filled deterministically "
            "(trunc-normal, std 0.02, seed 0)")
    dropped = sum(report["dropped"].values())
    if dropped:
        log(f"dropped {dropped} keys that are not model weights: "
            + ", ".join(f"{n} {r}" for r, n in report["dropped"].items()))
    src = ckpt.stat()
    marker = {"kind": _KIND, "version": 1, "source": str(ckpt.resolve()), "size": src.st_size,
              "mtime_ns": src.st_mtime_ns, "image_size": image_size, "views": [context_views, target_views],
              "dinov3": str(cfg.semantic.model_path), "dropped": report["dropped"], "filled": report["filled"]}
    out.mkdir(parents=True, exist_ok=True)
    # the marker first: a conversion killed half-way leaves a folder the next conversion may overwrite
    atomic_write_bytes(out / _MARKER, (json.dumps(marker, indent=1) + "\n").encode())
    save_pretrained(model, cfg, out, step=info["step"] or 0, semantic_dim=sem)
    m = cfg.model
    log(f"converted {ckpt} -> {out}: d={m.dim}, layers {m.camera_layers}/{m.scene_layers}/{m.renderer_layers}"
        f" (+{m.motion_layers if m.use_motion_mask else 0} motion), {m.num_latents} latents, patch {m.patch_size}, "
        f"{image_size}px, semantic channels {sem}, {sum(t.numel() for t in ours.values()) / 1e6:.1f}M parameters")
    return {"config": cfg, **report, "step": info["step"]}


def _check_out_dir(out: Path) -> None:
    """Write only into a new / empty directory or one this converter made (never over unrelated files)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not has_marker(out, _MARKER, _KIND):
        raise UserError(f"--out {out} already holds files that this converter did not write; choose a new or empty "
                        "directory")


def cached_conversion(ckpt: str | Path, image_size: int = 256, context_views: int = 2, target_views: int = 6,
                      dinov3_path: str = "", log=print) -> Path:
    """A release file -> its converted directory beside it, converting when absent or stale."""
    ckpt = Path(ckpt)
    out = ckpt.with_name(f"{ckpt.stem}.converted-{image_size}px-{context_views}+{target_views}")
    if has_marker(out, _MARKER, _KIND) and (out / "model.safetensors").is_file() and ckpt.is_file():
        meta = json.loads((out / _MARKER).read_text())  # has_marker read it: a small, valid JSON object
        src = ckpt.stat()
        if meta.get("size") == src.st_size and meta.get("mtime_ns") == src.st_mtime_ns and (
                not dinov3_path or meta.get("dinov3") == dinov3_path):
            return out
    if not os.access(ckpt.parent, os.W_OK):
        raise UserError(f"cannot write the converted checkpoint beside {ckpt}; run `wildrayzer convert official {ckpt} "
                        "--out DIR` and set inference.model_path=DIR")
    log(f"converting the release checkpoint {ckpt} (once; cached in {out})")
    convert_official(ckpt, out, image_size, context_views, target_views, dinov3_path, log=log)
    return out


def is_official_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in OFFICIAL_SUFFIXES


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="wildrayzer convert", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    o = sub.add_parser("official", help="the authors' released checkpoint (wildrayzer_2view.pt)")
    o.add_argument("ckpt", help="release checkpoint file (torch.save of {'model': state_dict, ...})")
    o.add_argument("--out", required=True, help="pretrained directory to write (new, empty, or an earlier conversion)")
    o.add_argument("--image-size", type=int, default=256, help="input resolution (default 256, the release's)")
    o.add_argument("--context-views", type=int, default=2)
    o.add_argument("--target-views", type=int, default=6)
    o.add_argument("--dinov3", default="", help="local DINOv3 directory (default: the hub id matching the checkpoint's "
                   "semantic width, resolved from the offline Hugging Face cache at load time)")
    args = p.parse_args(argv)
    if args.context_views < 1 or args.target_views < 1:
        raise UserError("--context-views and --target-views must be >= 1")
    convert_official(args.ckpt, args.out, args.image_size, args.context_views, args.target_views, args.dinov3)
    return 0
