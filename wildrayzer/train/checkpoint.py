"""Training-state checkpoints of a run: weights (see :mod:`wildrayzer.weights`) plus the state to resume from,
and the atomic LATEST pointer.

Run layout (``<training.output_dir>/<training.run_name>/``)::

    config.yaml  git_sha.txt
    checkpoints/ckpt_00001000.safetensors   model weights; header: config JSON, view counts, stage, step
    checkpoints/ckpt_00001000.state.pt      optimizer, scheduler, RNG (per rank), sampler position (weights_only)
    checkpoints/ckpt_LATEST                 one line: the stem of the newest complete checkpoint

Every file is written to a temporary name, fsync'd and renamed; LATEST is replaced only after both files of its
checkpoint are durable, so a kill at any moment leaves the previous LATEST valid.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..fileio import atomic_write_bytes, open_regular
from ..weights import LATEST, STEM, weights_bytes


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, cfg, train_state: dict, keep_last_n: int = 3,
                    semantic_dim: int = 0) -> Path:
    """Write weights + training state for ``step``, then move LATEST to it, then prune to the last ``keep_last_n``."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_dir.glob(".ckpt_*.tmp*"):  # temp files of a killed writer (one writer per run: rank 0)
        if stale.name.rpartition(".tmp")[2] != str(os.getpid()):
            stale.unlink(missing_ok=True)
    stem = f"ckpt_{step:08d}"
    weights = ckpt_dir / f"{stem}.safetensors"
    atomic_write_bytes(weights, weights_bytes(model, cfg, step, semantic_dim))
    buf = io.BytesIO()
    torch.save(train_state, buf)
    atomic_write_bytes(ckpt_dir / f"{stem}.state.pt", buf.getvalue())
    atomic_write_bytes(ckpt_dir / LATEST, (stem + "\n").encode())
    if keep_last_n > 0:
        stems = sorted({p.name.split(".")[0] for p in ckpt_dir.glob("ckpt_*.*") if STEM.match(p.name.split(".")[0])})
        for old in stems[:-keep_last_n]:
            if old != stem:
                for p in ckpt_dir.glob(f"{old}.*"):
                    p.unlink(missing_ok=True)
    return weights


# What a training state must hold to resume (key -> accepted types); written by the training loop.
STATE_KEYS = {"step": int, "optimizer": dict, "scheduler": dict, "rng": list, "sampler": dict, "nonfinite_total": int,
              "world_size": int}


def load_training_state(weights: Path) -> dict:
    """The ``.state.pt`` beside a weights file, loaded with ``weights_only=True``; a missing, unreadable, non-regular
    file, or one without the keys and types of :data:`STATE_KEYS`, is a CheckpointError naming the file and key."""
    path = weights.with_name(weights.name.replace(".safetensors", ".state.pt"))
    try:
        with open_regular(path, "training state", CheckpointError) as f:
            st = torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"training state {path} is missing; cannot resume from {weights}") from e
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001
        msg = " ".join(str(e).split())[:200]
        raise CheckpointError(f"training state {path} is unreadable ({type(e).__name__}: {msg})") from e
    problem = None
    if not isinstance(st, dict):
        problem = f"it holds a {type(st).__name__}, not a dict"
    else:
        for key, typ in STATE_KEYS.items():
            if key not in st:
                problem = f"key '{key}' is missing"
            elif not isinstance(st[key], typ) or isinstance(st[key], bool):
                problem = f"key '{key}' is a {type(st[key]).__name__}, not a {typ.__name__}"
            elif typ is int and st[key] < (1 if key == "world_size" else 0):
                problem = f"key '{key}' is {st[key]}"
            if problem:
                break
    if problem:
        raise CheckpointError(f"training state {path} is not a WildRayZer training state ({problem}); cannot resume "
                              f"from {weights}: delete that checkpoint's files or start a new run")
    return st
