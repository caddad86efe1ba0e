"""Initialise a model from another run's weights (stage 2 from stage 1, stage 3 from stage 2) with strict checks."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..weights import ARCH_KEYS, check_arch, load_state_strict, read_weights, resolve_checkpoint, stored_config

_MOTION_KEYS = ("use_motion_mask", "motion_layers", "motion_heads")
_CAMERA_KEYS = ("cameras", "camera_layers", "camera_query", "camera_shift_cue")


def _module(key: str) -> str:
    """'motion.decoder.0.weight' -> 'motion'; 'camera.own_view_pool.kv.weight' -> 'camera.own_view_pool'."""
    parts = key.split(".")
    return ".".join(parts[:2] if parts[0] == "camera" else parts[:1])


def init_from_checkpoint(model: nn.Module, cfg, path: str, log: Callable[[str], None]) -> list[str]:
    """Load ``path`` (file or run dir) into ``model``. Architecture and every key/shape must match, except the
    motion estimator when the source was trained without one, the camera tokens' own-view pool when the source
    names them by view index alone (``model.camera_query``; the pool starts at zero, so the loaded model predicts what
    the source does), the shift cue when the source has none (``model.camera_shift_cue``; also zero at first), and
    the whole camera estimator when the source is posed (``model.cameras=given``, which builds none) and the model
    predicts its cameras. Keys the source lacks are listed in the log and returned."""
    weights = resolve_checkpoint(path)
    state, meta = read_weights(weights)
    src = stored_config(meta, str(weights)).model
    m = cfg.model
    lacks = [(keys, prefix) for source_lacks, keys, prefix in (  # modules the model has and the source does not
        (not src.use_motion_mask and m.use_motion_mask, _MOTION_KEYS, "motion."),
        (src.cameras == "given" and m.cameras == "predicted", _CAMERA_KEYS, "camera."),
        (src.camera_query == "view_index" and m.camera_query == "own_view", ("camera_query",), "camera.own_view_pool."),
        (not src.camera_shift_cue and m.camera_shift_cue, ("camera_shift_cue",), "camera.shift_cue."),
    ) if source_lacks]
    unchecked = {k for keys, _ in lacks for k in keys}
    check_arch(m, src, f"training.init_from={path}: {weights}", tuple(k for k in ARCH_KEYS if k not in unchecked))
    allow = tuple(prefix for _, prefix in lacks)
    fresh = load_state_strict(model, state, f"training.init_from={weights}", allow_missing_prefixes=allow)
    log(f"initialised from {weights} (stage {meta.get('stage')}, step {meta.get('step')})"
        + (f"; {len(fresh)} tensors not in the source keep their fresh init: "
           f"{', '.join(sorted({_module(k) for k in fresh}))}" if fresh else ""))
    return fresh
