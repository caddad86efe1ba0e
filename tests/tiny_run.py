"""What the reliability, fault and security tests share: the repository paths, a very small model, quiet logging,
a small synthetic dataset (32x32, 12 frames, no COCO set) to train and infer on, and the console entry point run
in this process."""

import contextlib
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TRAIN_CFG = REPO / "configs/tiny/wildrayzer_stage1_pretrain.yaml"
INFER_CFG = REPO / "configs/tiny/wildrayzer_inference.yaml"
MODEL = ["model.image_size=32", "model.patch_size=8", "model.dim=64", "model.heads=2", "model.camera_layers=1",
         "model.scene_layers=1", "model.renderer_layers=1", "model.num_latents=16"]
NO_MOTION = ["model.use_motion_mask=false", "model.use_mae_masking=false", "semantic.backbone=none"]
QUIET = ["logging.progress=false", "logging.tensorboard=false"]


def small_synth(out: Path, dynamic_test: int = 1) -> Path:
    """Write 2 static train, 1 static test, 1 dynamic train and ``dynamic_test`` dynamic test scenes to ``out``."""
    from wildrayzer.data.synthetic import SynthParams, generate

    generate(out, SynthParams(static_train=2, static_test=1, dynamic_train=1, dynamic_test=dynamic_test, frames=12,
                              res=32, coco_images=0), progress=False)
    return out


def tiny_pretrained(out: Path, seed: int = 0) -> Path:
    """A randomly initialised MODEL + NO_MOTION model (2 context + 6 target views) saved with save_pretrained."""
    import torch

    from wildrayzer.config import load_config
    from wildrayzer.model import WildRayZer
    from wildrayzer.train.checkpoint import save_pretrained

    cfg = load_config(INFER_CFG, MODEL + NO_MOTION)
    torch.manual_seed(seed)
    return save_pretrained(WildRayZer(cfg.model), cfg, out)


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """``wildrayzer.cli.main(args)`` in this process -> (exit code, stdout, stderr)."""
    from wildrayzer.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, out.getvalue(), err.getvalue()
