"""Model weights I/O, shared by training, inference, the API, the demo and the converter: save, resolve, read and
load strictly (safetensors with the config in the header), and the one architecture check.

A weights file (``model.safetensors`` of a pretrained directory, or ``checkpoints/ckpt_<step>.safetensors`` of a run,
see :mod:`wildrayzer.train.checkpoint`) holds the state dict; its header holds the format tag, the resolved config
(JSON), view counts, stage, step and the semantic feature width. A pretrained directory (shipped model,
``from_pretrained``) holds ``model.safetensors`` and ``config.yaml`` (the same config, to read).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from .config import from_container, to_container, to_yaml
from .errors import CheckpointError, UserError
from .fileio import atomic_write_bytes, check_regular_file, read_capped

FORMAT = "wildrayzer-checkpoint-v1"
LATEST = "ckpt_LATEST"
STEM = re.compile(r"^ckpt_(\d{8})$")
# Model keys that must agree between a checkpoint and the config it is loaded into.
ARCH_KEYS = ("image_size", "patch_size", "dim", "heads", "mlp_ratio", "camera_layers", "scene_layers",
             "renderer_layers", "motion_layers", "num_latents", "num_context_views", "num_target_views", "qk_norm",
             "use_motion_mask", "motion_heads", "motion_upsample_steps", "cameras",
             "camera_query", "camera_shift_cue")
log = logging.getLogger(__name__)


class LoadedCheckpoint(NamedTuple):
    model: nn.Module
    config: object  # DictConfig stored with the weights
    metadata: dict
    path: Path


def arch_summary(model_cfg) -> dict:
    """The architecture keys with defaults resolved (``motion_heads`` 0 means ``heads``)."""
    out = {k: model_cfg[k] for k in ARCH_KEYS}
    out["motion_heads"] = out["motion_heads"] or out["heads"]
    return out


def _metadata(cfg, step: int, semantic_dim: int) -> dict[str, str]:
    m = cfg.model
    return {"format": FORMAT, "config": json.dumps(to_container(cfg)), "num_context_views": str(m.num_context_views),
            "num_target_views": str(m.num_target_views), "stage": str(cfg.training.stage), "step": str(step),
            "semantic_dim": str(semantic_dim)}


def weights_bytes(model: nn.Module, cfg, step: int, semantic_dim: int = 0) -> bytes:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return safetensors_bytes(state, metadata=_metadata(cfg, step, semantic_dim))


def save_pretrained(model: nn.Module, cfg, out_dir: str | Path, step: int = 0, semantic_dim: int = 0) -> Path:
    """A self-contained model directory: ``model.safetensors`` (with metadata) + ``config.yaml``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "model.safetensors", weights_bytes(model, cfg, step, semantic_dim))
    atomic_write_bytes(out / "config.yaml", to_yaml(cfg).encode())
    return out


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """Weights file LATEST points to, or None when the run has no checkpoint yet."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    pointer = ckpt_dir / LATEST
    try:
        stem = read_capped(pointer, "checkpoint pointer", CheckpointError, 4096).decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return None
    weights = ckpt_dir / f"{stem}.safetensors"
    if not STEM.match(stem) or not weights.is_file():
        raise CheckpointError(f"{pointer} names '{stem}', which is not a checkpoint in {ckpt_dir}")
    return weights


def resolve_checkpoint(path: str | Path) -> Path:
    """A ``.safetensors`` file, a run directory (follows checkpoints/ckpt_LATEST), its ``checkpoints/`` folder, or
    a pretrained directory (``model.safetensors``) -> the weights file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        return check_regular_file(p, "checkpoint", CheckpointError)
    if p.is_dir():
        if (p / "model.safetensors").exists():
            return check_regular_file(p / "model.safetensors", "checkpoint", CheckpointError)
        for run_dir in (p, p.parent):
            if (run_dir / "checkpoints" / LATEST).is_file():
                return latest_checkpoint(run_dir)
        raise CheckpointError(f"{p} holds no checkpoint (expected checkpoints/{LATEST} or model.safetensors)")
    raise CheckpointError(f"checkpoint not found: {p}")


def _check_file(path: Path) -> None:
    """A checkpoint must be a regular file: safetensors would wait forever on a FIFO."""
    try:
        check_regular_file(path, "checkpoint", CheckpointError)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """-> (state dict, header metadata) of a WildRayZer safetensors file; CheckpointError for anything else."""
    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - truncated / foreign bytes surface as many exception types
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({type(e).__name__}: {e})") from e
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path} is not a WildRayZer checkpoint (no '{FORMAT}' metadata)")
    return state, meta


def stored_config(meta: dict[str, str], where: str):
    try:
        stored = json.loads(meta["config"])
    except ValueError as e:
        raise CheckpointError(f"{where}: stored config is unreadable ({e})") from e
    except RecursionError:
        raise CheckpointError(f"{where}: stored config is nested too deeply to be a WildRayZer config") from None
    model = stored.get("model") if isinstance(stored, dict) else None
    if isinstance(model, dict) and ("motion_fusion" in model or "camera_pose_input" in model):
        raise CheckpointError(f"{where} was written by WildRayZer 0.1 (its own model layout, before the release "
                              "architecture); retrain it or use a checkpoint of this version")
    try:
        return from_container(stored)
    except UserError as e:
        raise CheckpointError(f"{where}: stored config is unreadable ({e})") from e


def check_arch(expected_model_cfg, stored_model_cfg, where: str, keys: tuple[str, ...] = ARCH_KEYS) -> None:
    """Raise CheckpointError listing the first architecture keys (of ``keys``: all of :data:`ARCH_KEYS` by default)
    that differ between the checkpoint and the config (view counts, layers, width, ...)."""
    stored, expected = arch_summary(stored_model_cfg), arch_summary(expected_model_cfg)
    diffs = [f"model.{k}: checkpoint {stored[k]!r} vs config {expected[k]!r}" for k in keys
             if stored[k] != expected[k]]
    if diffs:
        raise CheckpointError(f"{where} does not match the config: " + "; ".join(diffs[:5]))


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], where: str,
                      allow_missing_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Copy ``state`` into ``model`` with exact key and shape checks.

    Keys missing from ``state`` are allowed only under ``allow_missing_prefixes`` (modules the source cannot have);
    returns those keys. Any other missing / unexpected key or shape difference raises CheckpointError.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    allowed = [k for k in missing if any(k.startswith(p) for p in allow_missing_prefixes)]
    missing = [k for k in missing if k not in allowed]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = [f"{name}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                 for name, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if items]
        raise CheckpointError(f"{where} does not fit the model; " + "; ".join(parts))
    state = check_dtypes(state, own, where)
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"{where}: tensor '{bad}' holds NaN or infinite values; the checkpoint is corrupt or "
                              "from a diverged run: use an earlier checkpoint")
    model.load_state_dict({k: v for k, v in state.items()}, strict=False)
    return allowed


# dtypes a float32 tensor may be stored in and read back exactly (every value of them is a float32 value)
_LOSSLESS_TO = {torch.float32: (torch.float16, torch.bfloat16)}


def check_dtypes(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], where: str) -> dict:
    """``state`` with every tensor in the dtype of the model's own tensor of that key. A float16 / bfloat16 tensor
    for a float32 parameter is cast (exact) and said once in the log; any other difference (float64, integers,
    bool) is a CheckpointError naming the first such key."""
    cast, out = [], dict(state)
    for k, v in state.items():
        want = own[k].dtype if k in own else v.dtype
        if v.dtype == want:
            continue
        if v.dtype in _LOSSLESS_TO.get(want, ()):
            out[k] = v.to(want)
            cast.append(k)
            continue
        raise CheckpointError(f"{where}: tensor '{k}' is stored as {str(v.dtype).replace('torch.', '')} but the "
                              f"model holds {str(want).replace('torch.', '')}; re-save the checkpoint in "
                              f"{str(want).replace('torch.', '')} (only float16/bfloat16 -> float32 is cast)")
    if cast:
        kinds = sorted({str(state[k].dtype).replace("torch.", "") for k in cast})
        log.warning("%s: %d tensor(s) stored as %s were cast to float32 (exact), e.g. '%s'", where, len(cast),
                    "/".join(kinds), cast[0])
    return out


MAX_PARAMS_ENV = "WILDRAYZER_MAX_PARAMS"
DEFAULT_MAX_PARAMS = 3_000_000_000  # 3 B parameters (the paper model has 0.3 B); raise with WILDRAYZER_MAX_PARAMS


def max_params() -> int:
    raw = os.environ.get(MAX_PARAMS_ENV, "")
    try:
        return int(float(raw)) if raw else DEFAULT_MAX_PARAMS
    except ValueError:
        raise UserError(f"{MAX_PARAMS_ENV}={raw!r} is not a number") from None


def read_header(path: str | Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """-> (metadata, {key: shape}) of a WildRayZer safetensors file, reading no tensor data."""
    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - truncated / foreign bytes surface as many exception types
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({type(e).__name__}: {e})") from e
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{path} is not a WildRayZer checkpoint (no '{FORMAT}' metadata)")
    return meta, shapes


def _semantic_dim(meta: dict[str, str], where: str) -> int:
    raw = meta.get("semantic_dim", "0")
    if not raw.isdigit() or int(raw) > 65536:
        raise CheckpointError(f"{where}: header field semantic_dim={raw[:20]!r} is not a channel count in 0..65536")
    return int(raw)


def check_shapes_before_building(cfg, semantic_dim: int, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """Compare the model the header's config asks for with the file's own tensor index, and bound its size, on the
    meta device (nothing is allocated): a small file whose header asks for a huge model is refused here."""
    from .model import WildRayZerModel

    with torch.device("meta"):
        skeleton = WildRayZerModel(cfg.model, semantic_dim=semantic_dim)
    own = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    count = sum(p.numel() for p in skeleton.parameters())
    if count > max_params():
        raise CheckpointError(f"{where}: its config asks for a model of {count / 1e9:.2f} B parameters, above the "
                              f"limit of {max_params() / 1e9:.2f} B (set {MAX_PARAMS_ENV} to allow larger models)")
    missing = [k for k in own if k not in shapes]
    unexpected = [k for k in shapes if k not in own]
    wrong = [f"{k} {shapes[k]} vs {own[k]}" for k in own if k in shapes and shapes[k] != own[k]]
    if missing or unexpected or wrong:
        parts = [f"{name}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                 for name, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)) if items]
        raise CheckpointError(f"{where} does not fit the model its header describes; " + "; ".join(parts))


def load_model_checkpoint(path: str | Path, expected_cfg=None) -> LoadedCheckpoint:
    """Build the model stored at ``path`` and load its weights strictly.

    ``path``: weights file, run dir or pretrained dir. ``expected_cfg``: when given, its ``model`` section must match
    the stored architecture (view counts, layer counts, width, ...) or CheckpointError lists the differences.
    The header's config is validated, and the tensor index checked against it with a size bound, before any model
    is built or tensor read. The model is on the CPU in eval mode.
    """
    from .model import WildRayZerModel

    weights = resolve_checkpoint(path)
    meta, shapes = read_header(weights)
    cfg = stored_config(meta, str(weights))
    if expected_cfg is not None:
        check_arch(expected_cfg.model, cfg.model, str(weights))
    semantic_dim = _semantic_dim(meta, str(weights))
    check_shapes_before_building(cfg, semantic_dim, shapes, str(weights))
    state, _ = read_weights(weights)
    model = WildRayZerModel(cfg.model, semantic_dim=semantic_dim)
    load_state_strict(model, state, str(weights))
    return LoadedCheckpoint(model.eval(), cfg, meta, weights)
