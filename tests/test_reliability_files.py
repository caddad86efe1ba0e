"""Hostile files through the real command lines: decompression bombs, FIFOs and devices, huge or deeply nested JSON
and YAML ('billion laughs'), non-finite or singular cameras, bad view indices, a list naming a scene twice, a
malformed training state, checkpoint weights of the wrong dtype, and the importer facing a malformed split.

Every refused case: exit code 2, one ``error:`` line naming the file (or key / value), no traceback, nothing hangs
(a SIGALRM guard turns a blocked read into a failure), and the case folder hashes the same before and after (nothing
written, nothing deleted). Commands run through ``wildrayzer.cli.main`` in this process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tiny_run import (
    INFER_CFG,
    MODEL,
    NO_MOTION,
    QUIET,
    TRAIN_CFG,
    TRAIN_NOTES,
    one_error_line,
    photos,
    png_declaring,
    run_cli,
    small_synth,
    tiny_pretrained,
    tree,
)

from wildrayzer.data.frames import MAX_IMAGE_PIXELS
from wildrayzer.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

SCENE = "dynamic_test_0000"
LIST = "dre10k_final_context_2.txt"
INDEX = "dre10k_final_context_2_view_idx.json"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("files")
    return {"synth": small_synth(base / "synth"), "ckpt": tiny_pretrained(base / "ckpt")}


@pytest.fixture(autouse=True)
def no_hang():
    """A read that blocks (a FIFO without a writer) fails the test after 60 s instead of hanging the suite."""
    def fire(signum, frame):
        raise TimeoutError("the command blocked (a FIFO or device was opened)")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def data_copy(world, d: Path) -> Path:
    root = d / "data"
    shutil.copytree(world["synth"] / "dynamic_re10k", root)
    return root


def check_eval(root: Path, *extra: str) -> list[str]:
    return ["data", "check", "--config", str(INFER_CFG), "--mode", "eval", *MODEL, f"data.root={root}", *extra]


def infer_args(world, root: Path, out: Path, *extra: str) -> list[str]:
    return ["infer", "--config", str(INFER_CFG), *MODEL, *NO_MOTION, *QUIET, f"inference.model_path={world['ckpt']}",
            f"data.root={root}", f"inference_out_root={out}", "inference.device=cpu", *extra]


def edit_json(path: Path, fn) -> None:
    value = json.loads(path.read_text())
    fn(value)
    path.write_text(json.dumps(value))


def meta_path(root: Path) -> Path:
    return root / "test" / "metadata" / f"{SCENE}.json"


def set_frame(root: Path, frame: int, key: str, value) -> None:
    edit_json(meta_path(root), lambda m: m["frames"][frame].__setitem__(key, value))


def set_views(root: Path, **entry) -> None:
    edit_json(root / "test" / INDEX, lambda t: t[SCENE].update(entry))


def fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


@dataclass
class Case:
    argv: list[str]
    needles: tuple[str, ...]
    notes: tuple[str, ...] = ()  # lines allowed before the error (training notes)


# ------------------------------------------------------------------------------------- (a) decompression bombs
def bomb_png(world, d):  # 900 MP declared: PIL's own DecompressionBombError
    root = data_copy(world, d)
    png_declaring(root / "test/images" / SCENE / "00000.png", 30000, 30000)
    return Case(check_eval(root), ("00000.png", "decompression-bomb", "MAX_IMAGE_PIXELS"))


def png_above_cap_below_pil_limit(world, d):  # 105 MP: only PIL's warning; our cap refuses it
    root = data_copy(world, d)
    png_declaring(root / "test/images" / SCENE / "00011.png", 10240, 10240)
    return Case(check_eval(root), ("00011.png", "10240x10240", "100 MP limit"))


def bomb_mask(world, d):
    root = data_copy(world, d)
    png_declaring(root / "test/binary_masks" / SCENE / "00000.png", 30000, 30000)
    return Case(check_eval(root), ("binary_masks", "00000.png", "MAX_IMAGE_PIXELS"))


def import_bomb_photo(world, d):
    photos = d / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (20, 16), (40 * i, 0, 0)).save(photos / f"{i}.png")
    png_declaring(photos / "2.png", 12000, 9000)
    return Case(["data", "import", "--images", str(photos), "--out", str(d / "imported")], ("2.png", "12000x9000"))


def _import_case(d: Path, *extra: str) -> list[str]:
    photos = d / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (40 * i, 0, 0)).save(photos / f"{i}.png")
    return ["data", "import", "--images", str(photos), "--out", str(d / "imported"), *extra]


def import_res_too_large(world, d):  # would upscale each frame to 133333 x 100000 before writing it
    return Case(_import_case(d, "--res", "100000"), ("--res 100000", "100 MP limit"))


def import_fov_zero(world, d):
    return Case(_import_case(d, "--fov", "0"), ("--fov 0.0", "between 0 and 180"))


def import_fov_180(world, d):
    return Case(_import_case(d, "--fov", "180"), ("--fov 180.0",))


def import_negative_res(world, d):
    return Case(_import_case(d, "--res", "-5"), ("--res must be >= 0",))


# -------------------------------------------------------------------------------- (b) FIFOs, devices, folders
def fifo_image(world, d):
    root = data_copy(world, d)
    fifo(root / "test/images" / SCENE / "00000.png")
    return Case(check_eval(root), ("image", "00000.png", "FIFO"))


def fifo_mask(world, d):
    root = data_copy(world, d)
    fifo(root / "test/binary_masks" / SCENE / "00011.png")
    return Case(check_eval(root), ("binary_masks", "00011.png", "FIFO"))


def fifo_metadata(world, d):
    root = data_copy(world, d)
    fifo(meta_path(root))
    return Case(check_eval(root), (f"{SCENE}.json", "FIFO"))


def folder_as_metadata(world, d):
    root = data_copy(world, d)
    meta_path(root).unlink()
    meta_path(root).mkdir()
    return Case(check_eval(root), (f"{SCENE}.json", "a directory"))


def fifo_list_file(world, d):
    root = data_copy(world, d)
    fifo(root / "test" / LIST)
    return Case(check_eval(root), (LIST, "FIFO"))


def fifo_view_index(world, d):
    root = data_copy(world, d)
    fifo(root / "test" / INDEX)
    return Case(check_eval(root), (INDEX, "FIFO"))


def fifo_config(world, d):
    return Case(["data", "check", "--config", str(fifo(d / "my.yaml"))], ("config file", "my.yaml", "FIFO"))


def device_as_config(world, d):
    return Case(["data", "check", "--config", "/dev/zero"], ("/dev/zero", "character device"))


def fifo_base_config(world, d):
    fifo(d / "base.yaml")
    (d / "my.yaml").write_text("base: base.yaml\n")
    return Case(["data", "check", "--config", str(d / "my.yaml")], ("base.yaml", "FIFO"))


def fifo_checkpoint(world, d):
    root = data_copy(world, d)
    ckpt = fifo(d / "model.safetensors")
    return Case(infer_args(world, root, d / "out", f"inference.model_path={ckpt}"),
                ("checkpoint", "model.safetensors", "FIFO"))


def fifo_checkpoint_in_pretrained_dir(world, d):
    root = data_copy(world, d)
    shutil.copytree(world["ckpt"], d / "pre")
    fifo(d / "pre" / "model.safetensors")
    return Case(infer_args(world, root, d / "out", f"inference.model_path={d / 'pre'}"),
                ("pre/model.safetensors", "FIFO"))


def fifo_latest_pointer(world, d):
    run = saved_run(d)
    fifo(run / "checkpoints" / "ckpt_LATEST")
    return Case(train_args(world, d), ("ckpt_LATEST", "FIFO"))


def fifo_training_state(world, d):
    run = saved_run(d)
    fifo(run / "checkpoints" / "ckpt_00000001.state.pt")
    return Case(train_args(world, d), ("ckpt_00000001.state.pt", "FIFO"))


def import_fifo_photo(world, d):
    photos = d / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (20, 16)).save(photos / f"{i}.png")
    fifo(photos / "2.png")
    return Case(["data", "import", "--images", str(photos), "--out", str(d / "imported")], ("2.png", "FIFO"))


def import_fifo_video(world, d):
    return Case(["data", "import", "--video", str(fifo(d / "walk.mp4")), "--out", str(d / "imported")],
                ("--video", "walk.mp4", "FIFO"))


# ------------------------------------------------------------------------- (c) huge / deeply nested JSON, YAML
def deep_json_metadata(world, d):  # json raises RecursionError
    root = data_copy(world, d)
    meta_path(root).write_text("[" * 100_000 + "]" * 100_000)
    return Case(check_eval(root), (f"{SCENE}.json", "more than 64 levels"))


def nested_json_view_index(world, d):  # parses, but 200 levels deep
    root = data_copy(world, d)
    (root / "test" / INDEX).write_text(json.dumps({SCENE: {"context": [0, 11], "target": [2, 3, 5, 6, 8, 9]},
                                                   "x": json.loads("[" * 200 + "]" * 200)}))
    return Case(check_eval(root), (INDEX, "more than 64 levels"))


def huge_list_file(world, d):  # 65 MiB (sparse: nothing is written to disk)
    root = data_copy(world, d)
    with open(root / "test" / LIST, "r+b") as f:
        f.truncate(65 * 2 ** 20)
    return Case(check_eval(root), (LIST, "65.0 MiB", "64 MiB limit"))


def huge_metadata(world, d):
    root = data_copy(world, d)
    with open(meta_path(root), "r+b") as f:
        f.truncate(70 * 2 ** 20)
    return Case(check_eval(root), (f"{SCENE}.json", "64 MiB limit"))


def huge_config(world, d):
    cfg = d / "big.yaml"
    cfg.write_text("# padding\n")
    with open(cfg, "r+b") as f:
        f.truncate(2 * 2 ** 20)
    return Case(["data", "check", "--config", str(cfg)], ("big.yaml", "1 MiB limit"))


LAUGHS = "\n".join([f"{a}: &{a} [" + ", ".join([f"*{p}"] * 9) + "]" for p, a in zip("abcdefgh", "bcdefghi")])


def billion_laughs_config(world, d):
    cfg = d / "laughs.yaml"
    cfg.write_text('a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + LAUGHS + "\n")
    return Case(["data", "check", "--config", str(cfg)], ("laughs.yaml", "billion laughs"))


def billion_laughs_override(world, d):
    value = "[&a [1,1,1,1,1,1,1,1,1,1], " + ", ".join(
        f"&{n} [" + ",".join([f"*{p}"] * 10) + "]" for p, n in zip("abcdefg", "bcdefgh")) + "]"
    return Case(["data", "check", "--config", str(INFER_CFG), f"data.root={value}"], ("override", "billion laughs"))


def deep_yaml_config(world, d):
    cfg = d / "deep.yaml"
    cfg.write_text("model: " + "[" * 5000 + "]" * 5000 + "\n")
    return Case(["data", "check", "--config", str(cfg)], ("deep.yaml", "levels deep"))


def recursive_yaml_alias(world, d):
    cfg = d / "loop.yaml"
    cfg.write_text("data: &a\n  root: [*a]\n")
    return Case(["data", "check", "--config", str(cfg)], ("loop.yaml", "recursive alias"))


def deep_config_in_checkpoint_header(world, d):
    root = data_copy(world, d)
    path = d / "forged.safetensors"
    weights = load_file(str(world["ckpt"] / "model.safetensors"))
    deep = "[" * 50_000 + "]" * 50_000
    save_file(weights, str(path), metadata={"format": "wildrayzer-checkpoint-v1", "config": deep})
    return Case(infer_args(world, root, d / "out", f"inference.model_path={path}"), ("forged.safetensors", "nested"))


# ----------------------------------------------------------------------- (d) cameras and view indices
def w2c_infinite(world, d):
    root = data_copy(world, d)
    set_frame(root, 3, "w2c", [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1e400], [0, 0, 0, 1]])
    return Case(check_eval(root), (f"{SCENE}.json", "frame 3", "non-finite w2c"))


def w2c_singular(world, d):
    root = data_copy(world, d)
    set_frame(root, 5, "w2c", [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]])
    return Case(check_eval(root), (f"{SCENE}.json", "frame 5", "not an invertible rigid camera pose"))


def w2c_scaled(world, d):
    root = data_copy(world, d)
    set_frame(root, 0, "w2c", (2 * np.eye(4)).tolist())
    return Case(check_eval(root), (f"{SCENE}.json", "frame 0", "not an invertible rigid camera pose"))


def w2c_bottom_row(world, d):
    root = data_copy(world, d)
    set_frame(root, 2, "w2c", [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    return Case(check_eval(root), (f"{SCENE}.json", "frame 2", "bottom row [0.0, 0.0, 0.0, 0.0]"))


def focal_zero(world, d):
    root = data_copy(world, d)
    set_frame(root, 4, "fxfycxcy", [0.0, 25.0, 16.0, 16.0])
    return Case(check_eval(root), (f"{SCENE}.json", "frame 4", "<= 0"))


def principal_point_negative(world, d):
    root = data_copy(world, d)
    set_frame(root, 1, "fxfycxcy", [25.0, 25.0, -16.0, 16.0])
    return Case(check_eval(root), (f"{SCENE}.json", "frame 1", "<= 0"))


def fxfycxcy_nan(world, d):
    root = data_copy(world, d)
    path = meta_path(root)
    path.write_text(path.read_text().replace("25.657809644900944", "NaN", 1))
    return Case(check_eval(root), (f"{SCENE}.json", "frame 0", "non-finite fxfycxcy"))


def fxfycxcy_strings(world, d):
    root = data_copy(world, d)
    set_frame(root, 6, "fxfycxcy", ["25.6", "25.6", "16", "16"])
    return Case(check_eval(root), (f"{SCENE}.json", "must hold numbers, not str values"))


def w2c_booleans(world, d):
    root = data_copy(world, d)
    set_frame(root, 6, "w2c", [[True, False, False, False], [False, True, False, False],
                               [False, False, True, False], [False, False, False, True]])
    return Case(check_eval(root), (f"{SCENE}.json", "must hold numbers, not bool"))


def view_index_float(world, d):
    root = data_copy(world, d)
    set_views(root, context=[0, 10.5])
    return Case(check_eval(root), (INDEX, "view index 10.5", "not an integer"))


def view_index_string(world, d):
    root = data_copy(world, d)
    set_views(root, target=[2, "3", 5, 6, 8, 9])
    return Case(check_eval(root), (INDEX, "view index '3'", "not an integer"))


def view_index_bool(world, d):
    root = data_copy(world, d)
    set_views(root, context=[True, 11])
    return Case(check_eval(root), (INDEX, "view index True", "not an integer"))


def view_index_negative(world, d):
    root = data_copy(world, d)
    set_views(root, context=[-1, 11])
    return Case(check_eval(root), (INDEX, "view index -1", "out of range"))


def view_index_repeated_context(world, d):
    root = data_copy(world, d)
    set_views(root, context=[4, 4])
    return Case(check_eval(root), (INDEX, "context view 4 is listed twice"))


def view_index_entry_not_a_dict(world, d):
    root = data_copy(world, d)
    edit_json(root / "test" / INDEX, lambda t: t.__setitem__(SCENE, [0, 11]))
    return Case(check_eval(root), (INDEX, SCENE, "must be {'context'"))


# ------------------------------------------------------------------------------ (e) a scene listed twice
def list_names_scene_twice(world, d):
    root = data_copy(world, d)
    with open(root / "test" / LIST, "a") as f:
        f.write(f"./metadata/{SCENE}.json\n")
    return Case(infer_args(world, root, d / "out"), (LIST, "twice", SCENE))


def two_metadata_files_one_scene(world, d):
    root = data_copy(world, d)
    shutil.copy(meta_path(root), root / "test/metadata/copy.json")
    with open(root / "test" / LIST, "a") as f:
        f.write("metadata/copy.json\n")
    return Case(infer_args(world, root, d / "out"), (LIST, f"scene '{SCENE}' twice", "copy.json"))


# ------------------------------------------------------------------------------ (f) training state on resume
def saved_run(d: Path, state: dict | None = None) -> Path:
    """A run folder with one checkpoint (step 1) and a training state: a real one, or ``state``."""
    from wildrayzer.config import load_config
    from wildrayzer.model import WildRayZerModel
    from wildrayzer.train.checkpoint import save_checkpoint

    cfg = load_config(TRAIN_CFG, [*MODEL, *QUIET, f"training.output_dir={d / 'exp'}", "training.run_name=run"])
    model = WildRayZerModel(cfg.model)
    if state is None:
        from wildrayzer.train.optim import build_optimizer, build_scheduler
        from wildrayzer.train.rng import capture_rng
        from wildrayzer.train.stages import apply_trainable

        apply_trainable(model, cfg.training.stage, cfg.training.freeze_parts)
        opt = build_optimizer(model, cfg.training)
        state = {"step": 1, "optimizer": opt.state_dict(), "scheduler": build_scheduler(opt, cfg.training).state_dict(),
                 "rng": [capture_rng()], "sampler": {"epoch": 0, "consumed": 1}, "nonfinite_total": 0,
                 "world_size": 1}
    save_checkpoint(d / "exp" / "run", 1, model, cfg, state)
    return d / "exp" / "run"


def train_args(world, d: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(TRAIN_CFG), *MODEL, *QUIET, f"training.output_dir={d / 'exp'}",
            "training.run_name=run", "training.max_steps=2", "training.batch_size=2", "data.num_workers=0",
            f"data.root={world['synth'] / 're10k_processed_v2'}", *extra]


def _state_case(edit, *needles):
    def case(world, d):
        run = saved_run(d)
        path = run / "checkpoints" / "ckpt_00000001.state.pt"
        state = torch.load(path, weights_only=True)
        state = edit(state)
        torch.save(state, path)
        return Case(train_args(world, d), ("ckpt_00000001.state.pt", *needles), notes=TRAIN_NOTES)

    case.__name__ = f"state_{edit.__name__}"
    return case


def without_optimizer(st):
    st.pop("optimizer")
    return st


def step_is_text(st):
    st["step"] = "7"
    return st


def not_a_dict(st):
    return [st]


def negative_step(st):
    st["step"] = -3
    return st


def rng_is_a_tensor(st):
    st["rng"] = torch.zeros(3)
    return st


def optimizer_of_another_model(st):
    st["optimizer"]["param_groups"][0]["params"] = [0, 1]
    return st


def negative_sampler_position(st):
    st["sampler"]["consumed"] = -5
    return st


STATE_CASES = [
    _state_case(without_optimizer, "key 'optimizer' is missing"),
    _state_case(step_is_text, "key 'step' is a str, not a int"),
    _state_case(not_a_dict, "holds a list, not a dict"),
    _state_case(negative_step, "key 'step' is -3"),
    _state_case(rng_is_a_tensor, "key 'rng' is a Tensor"),
    _state_case(optimizer_of_another_model, "'optimizer' entry does not fit this run"),
    _state_case(negative_sampler_position, "'sampler' entry does not fit this run", "negative"),
]


# ------------------------------------------------------------------------------ (g) checkpoint dtypes
def _recast(world, d, fn) -> Path:
    out = d / "pre"
    shutil.copytree(world["ckpt"], out)
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    state = fn(load_file(str(out / "model.safetensors")))
    save_file(state, str(out / "model.safetensors"), metadata=meta)
    return out


def weights_float64(world, d):
    root = data_copy(world, d)
    pre = _recast(world, d, lambda s: {k: v.double() for k, v in s.items()})
    return Case(infer_args(world, root, d / "out", f"inference.model_path={pre}"),
                ("pre/model.safetensors", "stored as float64 but the model holds float32"))


def weights_int64(world, d):
    root = data_copy(world, d)
    first = None

    def one_int(s):
        nonlocal first
        first = sorted(s)[3]
        s[first] = s[first].long()
        return s

    pre = _recast(world, d, one_int)
    return Case(infer_args(world, root, d / "out", f"inference.model_path={pre}"), (f"tensor '{first}'", "int64"))


def weights_nan(world, d):
    root = data_copy(world, d)
    key = None

    def poison(s):
        nonlocal key
        key = sorted(s)[-1]
        s[key][..., 0] = float("nan")
        return s

    pre = _recast(world, d, poison)
    return Case(infer_args(world, root, d / "out", f"inference.model_path={pre}"), (f"tensor '{key}'", "NaN"))


CASES = [bomb_png, png_above_cap_below_pil_limit, bomb_mask, import_bomb_photo,
         fifo_image, fifo_mask, fifo_metadata, folder_as_metadata, fifo_list_file, fifo_view_index, fifo_config,
         device_as_config, fifo_base_config, fifo_checkpoint, fifo_checkpoint_in_pretrained_dir, fifo_latest_pointer,
         fifo_training_state, import_fifo_photo, import_fifo_video,
         deep_json_metadata, nested_json_view_index, huge_list_file, huge_metadata, huge_config,
         billion_laughs_config, billion_laughs_override, deep_yaml_config, recursive_yaml_alias,
         deep_config_in_checkpoint_header,
         w2c_infinite, w2c_singular, w2c_scaled, w2c_bottom_row, focal_zero, principal_point_negative, fxfycxcy_nan,
         fxfycxcy_strings, w2c_booleans, import_res_too_large, import_fov_zero, import_fov_180, import_negative_res,
         view_index_float, view_index_string, view_index_bool, view_index_negative, view_index_repeated_context,
         view_index_entry_not_a_dict, list_names_scene_twice, two_metadata_files_one_scene,
         *STATE_CASES, weights_float64, weights_int64, weights_nan]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_hostile_file_is_refused_in_one_line_and_changes_nothing(world, case, tmp_path, monkeypatch):
    monkeypatch.delenv("WILDRAYZER_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    c = case(world, tmp_path)
    before = tree(tmp_path)
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # within the cap PIL's warning is ours to mute
        rc, _, err = run_cli(c.argv)
    one_error_line(rc, err, *c.needles, notes=c.notes)
    assert "Traceback" not in err and len(err.splitlines()[-1]) < 600, err
    assert time.monotonic() - t0 < 45, "refused, but not quickly"
    assert tree(tmp_path) == before, "a refused command wrote or deleted files"


def test_image_within_the_cap_is_read_without_warnings(tmp_path):
    """A 90 MP image (above PIL's 89.5 MP warning, below our 100 MP cap) is not refused and raises no warning."""
    from wildrayzer.data.frames import open_image

    path = png_declaring(tmp_path / "big.png", 9500, 9500)
    assert 9500 * 9500 < MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_image(path) as im:
            assert im.size == (9500, 9500)  # header only: decoding would fail on the forged file, not the cap


def test_float16_weights_are_cast_once_with_a_log_line(world, tmp_path, caplog):
    from wildrayzer.weights import load_model_checkpoint

    pre = _recast(world, tmp_path, lambda s: {k: v.half() for k, v in s.items()})
    with caplog.at_level(logging.WARNING, logger="wildrayzer.train.checkpoint"):
        loaded = load_model_checkpoint(pre)
    casts = [r.getMessage() for r in caplog.records if "cast to float32" in r.getMessage()]
    assert len(casts) == 1 and "float16" in casts[0], casts
    ref = load_model_checkpoint(world["ckpt"]).model.state_dict()
    for k, v in loaded.model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, ref[k].half().float()), k


def test_bfloat16_weights_load_but_int_weights_do_not(world, tmp_path):
    from wildrayzer.weights import load_model_checkpoint

    load_model_checkpoint(_recast(world, tmp_path / "bf", lambda s: {k: v.bfloat16() for k, v in s.items()}))
    with pytest.raises(CheckpointError, match="stored as int32"):
        load_model_checkpoint(_recast(world, tmp_path / "int", lambda s: {k: v.int() for k, v in s.items()}))


# ------------------------------------------------------------------------------------------ (7) the importer


def imported(d: Path) -> Path:
    """An output root holding one imported scene ('first') and a list line the user added by hand."""
    out = d / "ds"
    rc, _, err = run_cli(["data", "import", "--images", str(photos(d, 3, name="first")), "--out", str(out),
                          "--scene", "first", "--res", "0"])
    assert rc == 0, err
    with open(out / "test" / "full_list.txt", "a") as f:
        f.write("../elsewhere/metadata/mine.json\n")
    return out


def import_args(src: Path, out: Path, scene: str = "second") -> list[str]:
    return ["data", "import", "--images", str(src), "--out", str(out), "--scene", scene, "--res", "0"]


def _index_invalid_json(out):
    (out / "test/view_idx.json").write_text('{"first": {"context": [0, 2], ')
    return ("view_idx.json", "not valid JSON")


def _index_is_a_list(out):
    (out / "test/view_idx.json").write_text("[1, 2, 3]")
    return ("view_idx.json", "not a JSON object")


def _index_bad_entry(out):
    (out / "test/view_idx.json").write_text('{"first": {"context": 3}}')
    return ("view_idx.json", "entry 'first'")


def _index_fifo(out):
    fifo(out / "test/view_idx.json")
    return ("view_idx.json", "FIFO")


def _index_deep(out):
    (out / "test/view_idx.json").write_text("[" * 50_000 + "]" * 50_000)
    return ("view_idx.json", "more than 64 levels")


def _list_not_text(out):
    (out / "test/full_list.txt").write_bytes(b"metadata/first.json\n\xff\xfe\x00binary")
    return ("full_list.txt", "not readable text")


def _list_duplicate(out):
    with open(out / "test/full_list.txt", "a") as f:
        f.write("metadata/first.json\n")
    return ("full_list.txt", "'metadata/first.json' twice")


def _list_fifo(out):
    fifo(out / "test/full_list.txt")
    return ("full_list.txt", "FIFO")


def _list_is_a_folder(out):
    (out / "test/full_list.txt").unlink()
    (out / "test/full_list.txt").mkdir()
    return ("full_list.txt", "a directory")


def _metadata_is_a_file(out):
    shutil.rmtree(out / "test/metadata")
    (out / "test/metadata").write_text("not a folder")
    return ("metadata", "not a folder")


SPLIT_CASES = [_index_invalid_json, _index_is_a_list, _index_bad_entry, _index_fifo, _index_deep, _list_not_text,
               _list_duplicate, _list_fifo, _list_is_a_folder, _metadata_is_a_file]


@pytest.mark.parametrize("corrupt", SPLIT_CASES, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("scene", ["second", "first"])  # a new scene, and a re-import of the existing one
def test_import_into_a_malformed_split_writes_nothing(tmp_path, corrupt, scene):
    out = imported(tmp_path)
    needles = corrupt(out)
    src = photos(tmp_path, 4)
    before = tree(tmp_path)
    rc, _, err = run_cli(import_args(src, out, scene))
    one_error_line(rc, err, *needles)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("blocker", ["metadata/second.json/", "images/second", "full_list.txt/x"])
def test_import_over_a_foreign_entry_at_the_scene_name_writes_nothing(tmp_path, blocker):
    """A folder where the scene's metadata goes, a file where its frames go: refused before anything is written."""
    out = imported(tmp_path)
    target = out / "test" / blocker.rstrip("/")
    if blocker.endswith("/"):
        target.mkdir()
    elif blocker == "full_list.txt/x":  # the list file is a folder holding a file
        (out / "test/full_list.txt").unlink()
        target.parent.mkdir()
        target.write_text("mine")
    else:
        target.write_text("mine")
    src = photos(tmp_path, 3)
    before = tree(tmp_path)
    rc, _, err = run_cli(import_args(src, out))
    one_error_line(rc, err, blocker.split("/")[0])
    assert tree(tmp_path) == before


def test_failed_import_into_a_new_folder_leaves_no_folder(tmp_path):
    src = photos(tmp_path, 4, bad_at=3)
    before = tree(tmp_path)
    rc, _, err = run_cli(import_args(src, tmp_path / "new" / "ds"))
    one_error_line(rc, err, "03.png", "cannot read image")
    assert tree(tmp_path) == before, "folders created by the failed import were left behind"


@pytest.mark.parametrize("failing", ["full_list.txt", "view_idx.json", "first.json"])
def test_a_failure_while_swapping_in_restores_the_split(tmp_path, monkeypatch, failing):
    """The last renames fail (disk error): the frames and files already swapped in are put back."""
    out = imported(tmp_path)
    src = photos(tmp_path, 5)
    before = tree(tmp_path)
    real = os.replace

    def dying(a, b):
        if Path(b).name == failing and ".importing" in Path(a).name:
            raise OSError(5, "Input/output error")
        return real(a, b)

    monkeypatch.setattr(os, "replace", dying)
    with pytest.raises(OSError):
        from wildrayzer.data.importer import image_frames, import_scene

        import_scene(image_frames(src), out, "first", res=0)
    assert tree(tmp_path) == before


def test_import_keeps_the_users_list_lines_and_adds_the_scene_once(tmp_path):
    out = imported(tmp_path)
    for _ in range(2):  # a re-import of the same scene is listed once
        rc, _, err = run_cli(import_args(photos(tmp_path, 4, name=f"p{_}"), out))
        assert rc == 0, err
    lines = (out / "test/full_list.txt").read_text().splitlines()
    assert lines == ["metadata/first.json", "../elsewhere/metadata/mine.json", "metadata/second.json"]
    table = json.loads((out / "test/view_idx.json").read_text())
    assert sorted(table) == ["first", "second"] and table["second"]["context"] == [0, 3]
    assert not [p for p in out.rglob(".*")], "hidden staging entries left behind"
