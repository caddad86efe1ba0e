"""Initialise a model from another run's weights (stage 2 from stage 1, stage 3 from stage 2) with strict checks."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..weights import ARCH_KEYS, check_arch, load_state_strict, read_weights, resolve_checkpoint, stored_config

_MOTION_KEYS = ("use_motion_mask", "motion_layers", "motion_heads")


def init_from_checkpoint(model: nn.Module, cfg, path: str, log: Callable[[str], None]) -> list[str]:
    """Load ``path`` (file or run dir) into ``model``. Architecture and every key/shape must match, except the
    motion estimator when the source was trained without one (its keys are listed in the log and returned)."""
    weights = resolve_checkpoint(path)
    state, meta = read_weights(weights)
    src = stored_config(meta, str(weights)).model
    source_lacks_motion = not src.use_motion_mask and cfg.model.use_motion_mask
    keys = tuple(k for k in ARCH_KEYS if not (source_lacks_motion and k in _MOTION_KEYS))
    check_arch(cfg.model, src, f"training.init_from={path}: {weights}", keys)
    allow = ("motion.",) if source_lacks_motion else ()
    fresh = load_state_strict(model, state, f"training.init_from={weights}", allow_missing_prefixes=allow)
    log(f"initialised from {weights} (stage {meta.get('stage')}, step {meta.get('step')})"
        + (f"; {len(fresh)} tensors not in the source keep their fresh init: "
           f"{', '.join(sorted({k.split('.')[0] for k in fresh}))}" if fresh else ""))
    return fresh
