"""What the reliability, fault, security and benchmark tests share: the repository paths, a very small model, quiet
logging, a small synthetic dataset (32x32, 12 frames, no COCO set) to train and infer on, and the console entry point
run in this process; a tree hash to prove that a refused command changed nothing on disk."""

import contextlib
import hashlib
import io
import os
import struct
import sys
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
TRAIN_CFG = REPO / "configs/tiny/wildrayzer_stage1_pretrain.yaml"
INFER_CFG = REPO / "configs/tiny/wildrayzer_inference.yaml"
MODEL = ["model.image_size=32", "model.patch_size=8", "model.dim=64", "model.heads=2", "model.camera_layers=1",
         "model.scene_layers=1", "model.renderer_layers=1", "model.num_latents=16"]
NO_MOTION = ["model.use_motion_mask=false", "model.use_mae_masking=false", "semantic.backbone=none"]
QUIET = ["logging.progress=false", "logging.tensorboard=false"]
# The other tests' model sizes: TINY_MODEL (d=64, 4 heads) for training and checkpoint tests, MICRO_MODEL (d=32,
# 2 heads, 2 + 3 views, motion head of 1 layer) for the method-decision tests.
TINY_MODEL = ["model.image_size=32", "model.patch_size=8", "model.dim=64", "model.heads=4", "model.camera_layers=1",
              "model.scene_layers=1", "model.renderer_layers=1", "model.num_latents=16"]
MICRO_MODEL = ["model.image_size=32", "model.patch_size=8", "model.dim=32", "model.heads=2", "model.camera_layers=1",
               "model.scene_layers=1", "model.renderer_layers=1", "model.motion_layers=1", "model.num_latents=8",
               "model.num_context_views=2", "model.num_target_views=3", "model.motion_heads=2"]


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
    from wildrayzer.model import WildRayZerModel
    from wildrayzer.weights import save_pretrained

    cfg = load_config(INFER_CFG, MODEL + NO_MOTION)
    torch.manual_seed(seed)
    return save_pretrained(WildRayZerModel(cfg.model), cfg, out)


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """``wildrayzer.cli.main(args)`` in this process -> (exit code, stdout, stderr)."""
    from wildrayzer.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, out.getvalue(), err.getvalue()


def tree(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """{relative path: kind + content hash} for everything under ``root`` (``skip``: subtrees left out)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if d / n not in skip]
        for name in dirnames + filenames:
            p = d / name
            rel = p.relative_to(root).as_posix()
            if p in skip:
                continue
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif not p.is_file():  # a FIFO or device: never read it
                out[rel] = f"special:{p.stat().st_mode:o}"
            else:
                out[rel] = "file:" + hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# Lines the training CLI legitimately prints to stderr before it reaches a problem (RunLogger notes).
TRAIN_NOTES = ("stage ", "perceptual loss", "resuming from", "initialised from", "data: ")


def one_error_line(rc: int, err: str, *needles: str, notes: tuple[str, ...] = ()) -> None:
    """Exit code 2 and exactly one line on stderr, ``error: ...``, holding every needle; before it only lines that
    start with one of ``notes`` (e.g. TRAIN_NOTES), none by default."""
    assert rc == 2, err
    lines = err.splitlines()
    assert err.endswith("\n") and lines and lines[-1].startswith("error: "), err
    assert all(ln.startswith(notes) for ln in lines[:-1]) if notes else len(lines) == 1, err
    for n in needles:
        assert n in lines[-1], (n, err)


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A valid 1x1 PNG whose header (IHDR, CRC fixed) claims ``width x height``: a few bytes that PIL would decode
    into a huge canvas."""
    from PIL import Image

    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4: ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr: ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def photos(d: Path, n: int, bad_at: int | None = None, name: str = "photos") -> Path:
    """A folder ``d/name`` of ``n`` small PNG photos; photo ``bad_at`` (if given) is a truncated PNG."""
    from PIL import Image

    folder = d / name
    folder.mkdir()
    for i in range(n):
        if i == bad_at:
            (folder / f"{i:02d}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        else:
            Image.new("RGB", (24, 18), (30 * i, 60, 90)).save(folder / f"{i:02d}.png")
    return folder


def posed_static_test(out: Path):
    """A randomly initialised posed MODEL + NO_MOTION model (``model.cameras=given``) as an in-memory Pipeline, with
    :func:`small_synth`'s static test set written to ``out``. -> (pipeline, eval dataset, data dir)."""
    import torch

    from wildrayzer.config import load_config
    from wildrayzer.data import build_dataset
    from wildrayzer.infer.pipeline import Pipeline
    from wildrayzer.model import WildRayZerModel

    root = small_synth(out)
    cfg = load_config(TRAIN_CFG, MODEL + NO_MOTION + ["model.cameras=given", "data.split=test",
                                                      f"data.root={root / 're10k_processed_v2'}"])
    torch.manual_seed(0)
    pipe = Pipeline(WildRayZerModel(cfg.model).eval(), None, cfg, torch.device("cpu"), Path("in-memory"))
    return pipe, build_dataset(cfg, "eval"), root


def bench_on_static_test(name: str, data_dir: Path, tmp: Path) -> tuple[str, str]:
    """``wildrayzer bench NAME MODEL --out DIR`` on a fresh :func:`tiny_pretrained` model and the static test of
    ``data_dir``, checked to exit 0, to leave autograd on and to print the table it writes. The benchmarks run from the
    repository root: the caller changes there first (monkeypatch.chdir(REPO)). -> (the table file's text, stdout)."""
    import torch

    ckpt = tiny_pretrained(tmp / "model")
    out = tmp / "out"
    rc, stdout, _ = run_cli(["bench", name, str(ckpt), "--out", str(out), *MODEL,
                             f"data.root={data_dir / 're10k_processed_v2'}"])
    assert rc == 0
    assert torch.is_grad_enabled()  # the script ran in this process and left autograd as it found it
    md = (out / f"{name}.md").read_text()
    assert str(ckpt) in md and md in stdout
    return md, stdout
