"""``wildrayzer parity official FIXTURE_DIR``: numerical parity of this package's model with the authors' code.

A fixture (layout of ``tests/fixtures/parity/official_tiny``) holds ``spec.json`` (every key of the release's state
dict with its shape and how to regenerate its values) and ``io.safetensors`` (inputs, the semantic features the
release's motion head received, and the release's outputs). This command rebuilds the release checkpoint from the
spec, writes it in the release's file layout, converts it with the code of ``wildrayzer convert official``, loads the
result like any pretrained directory, runs it on the fixture's images and features, and prints one JSON line of
maximum absolute differences. Exit 0 when every one is <= ``--tol`` (1e-4) and no token mask differs, else 1.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from safetensors.torch import load_file

from ..errors import UserError

OUTPUTS = ("render", "render_input", "c2w", "fxfycxcy", "predicted_input_masks", "predicted_target_masks")


def regenerate_state(spec: dict) -> dict[str, torch.Tensor]:
    """spec["keys"] -> the release state dict, in order (``init: normal`` / ``init: value``)."""
    state = {}
    for entry in spec["keys"]:
        shape = tuple(int(s) for s in entry["shape"])
        if entry["init"] == "normal":
            arr = np.random.default_rng(int(entry["seed"])).standard_normal(shape).astype(np.float32)
            arr = arr * entry["scale"] + entry["offset"]
        elif entry["init"] == "value":
            arr = np.asarray(entry["value"], dtype=np.float32).reshape(shape)
        else:
            raise UserError(f"spec.json: key {entry['name']} has unknown init '{entry['init']}'")
        state[entry["name"]] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return state


def _read_fixture(fixture: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    spec_path, io_path = fixture / "spec.json", fixture / "io.safetensors"
    for p in (spec_path, io_path):
        if not p.is_file():
            raise UserError(f"parity fixture {fixture} lacks {p.name} (expected spec.json + io.safetensors)")
    try:
        spec = json.loads(spec_path.read_text())
        io = load_file(str(io_path))
    except (ValueError, OSError) as e:
        raise UserError(f"parity fixture {fixture} is unreadable ({type(e).__name__}: {e})") from None
    missing = [k for k in ("images", "dino_features_input", "dino_features_target", "input_patch_mask", *OUTPUTS)
               if k not in io]
    if missing or "keys" not in spec:
        raise UserError(f"parity fixture {fixture} lacks {', '.join(missing) or 'spec.json keys'}")
    return spec, io


def _features(flat: torch.Tensor, b: int) -> torch.Tensor:
    """(B*V, N, C) semantic tokens -> (B, V, C, g, g), the release's square token grid."""
    g = math.isqrt(flat.shape[1])
    if g * g != flat.shape[1]:
        raise UserError(f"parity fixture: {flat.shape[1]} semantic tokens per view do not form a square grid")
    return rearrange(flat, "(b v) (h w) c -> b v c h w", b=b, h=g)


def run_parity(fixture: str | Path, tol: float = 1e-4, log=lambda _msg: None) -> dict:
    """-> {"max_abs": {output: float}, "token_mask_mismatches": int} for one fixture directory (``tol`` decides
    whether the release's own motion-head token selection is tried at batch size > 1)."""
    from ..official.convert import convert_official
    from ..weights import load_model_checkpoint

    fixture = Path(fixture)
    spec, io = _read_fixture(fixture)
    images = io["images"].float()
    b, v, _, h, w = images.shape
    vi, vt = io["render_input"].shape[1], io["render"].shape[1]
    if vi + vt != v:
        raise UserError(f"parity fixture: {vi} inputs + {vt} targets != {v} images")
    with tempfile.TemporaryDirectory(prefix="wildrayzer-parity-") as tmp:
        ckpt = Path(tmp) / "release.pt"
        torch.save({"model": regenerate_state(spec), "optimizer": {}, "lr_scheduler": {}, "fwdbwd_pass_step": 0,
                    "param_update_step": 0}, ckpt)
        convert_official(ckpt, Path(tmp) / "converted", image_size=h, context_views=vi, target_views=vt, log=log)
        model = load_model_checkpoint(Path(tmp) / "converted").model.float().eval()
    sem = torch.cat([_features(io["dino_features_input"].float(), b),
                     _features(io["dino_features_target"].float(), b)], dim=1)
    result = _compare(model, images, vi, sem, io)
    if b > 1 and not passes(result, tol):  # the release's own selection of image tokens for its motion head at B > 1
        quirk = _compare(model, images, vi, sem, io, release_batch_order=True)
        if passes(quirk, tol):
            quirk["note"] = ("matched with the release's motion-head token selection at batch size > 1 (it takes "
                             "rows [:B*Vi] of the batch-major token list, i.e. other samples' tokens; this package "
                             "gives each view its own tokens)")
            return quirk
    return result


def passes(result: dict, tol: float = 1e-4) -> bool:
    return all(x <= tol for x in result["max_abs"].values()) and result["token_mask_mismatches"] == 0


def _release_order_hooks(model) -> list:
    """Hooks that feed the motion head the release's token rows: with all views' tokens flattened batch-major, the
    input views get rows [:B*Vi] and the targets the rest (the right rows only at B = 1)."""
    seen = {}

    def keep(_mod, _args, out):
        seen["flat"], seen["calls"] = out.flatten(0, 1), 0

    def swap(_mod, args):
        sem, img, plk, hh, ww = args
        rows = img.shape[0] * img.shape[1]
        start = 0 if seen["calls"] == 0 else seen["flat"].shape[0] - rows  # inputs first, then targets
        seen["calls"] += 1
        return sem, seen["flat"][start:start + rows].reshape(img.shape), plk, hh, ww

    return [model.tokenizer.register_forward_hook(keep), model.motion.register_forward_pre_hook(swap)]


def _compare(model, images: torch.Tensor, vi: int, sem: torch.Tensor, io: dict, release_batch_order: bool = False,
             ) -> dict:
    b, _, _, h, w = images.shape
    hooks = _release_order_hooks(model) if release_batch_order else []
    try:
        with torch.no_grad():
            out = model(images, vi, semantic_feats=sem, motion_all_views=True, render_inputs=True)
    finally:
        for hk in hooks:
            hk.remove()
    size = torch.tensor([w, h, w, h], dtype=torch.float32)
    logits = out["motion_logits"]
    ours = {"render": out["renders"], "render_input": out["input_renders"], "c2w": out["cameras"]["c2w"],
            "fxfycxcy": (out["cameras"]["fxfycxcy"] / size).flatten(0, 1),
            "predicted_input_masks": logits[:, :vi].flatten(0, 1),
            "predicted_target_masks": logits[:, vi:].flatten(0, 1)}
    max_abs = {}
    for k in OUTPUTS:
        ref = io[k].float()
        if tuple(ours[k].shape) != tuple(ref.shape):
            raise UserError(f"parity: output {k} has shape {tuple(ours[k].shape)}, the fixture {tuple(ref.shape)}")
        max_abs[k] = float((ours[k].float() - ref).abs().max())
    ref_mask = io["input_patch_mask"].float().flatten(1) > 0.5  # (B*Vi, N)
    token_mask = out["token_mask"].flatten(0, 1) if out["token_mask"] is not None else torch.zeros_like(ref_mask)
    return {"max_abs": max_abs, "token_mask_mismatches": int((token_mask != ref_mask).sum())}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="wildrayzer parity", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    o = sub.add_parser("official", help="against outputs of the authors' code (spec.json + io.safetensors)")
    o.add_argument("fixture", help="fixture directory")
    o.add_argument("--tol", type=float, default=1e-4, help="largest allowed absolute difference (default 1e-4)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    result = run_parity(args.fixture, args.tol)
    print(json.dumps(result))
    return 0 if passes(result, args.tol) else 1
