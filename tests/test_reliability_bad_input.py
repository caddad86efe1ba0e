"""Bad input through the real command lines: one line on stderr naming the file / key, exit code 2, no traceback, and
nothing left behind that a later run could mistake for finished work (no ckpt_LATEST, scene.json, index.html).

Each case prepares a private copy of a tiny synthetic dataset and names a command (``python train.py``,
``python inference.py``, ``python -m wildrayzer.cli data ...``). The fast suite runs every case through the console
entry point in this process (``wildrayzer.cli.main``: same parsing, error handling and exit codes; DataLoader workers
are still real processes) and a few as real subprocesses; ``-m slow`` runs every case as a subprocess (Python + torch
start-up costs ~3-5 s CPU each, so the selected subprocess cases run concurrently once per module).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from tiny_run import INFER_CFG, MODEL, NO_MOTION, PY, QUIET, REPO, TRAIN_CFG, TRAIN_NOTES, small_synth

# Files whose presence marks finished work: a run to resume, a finished scene, a finished report.
FINISHED_MARKERS = ("ckpt_LATEST", "*.safetensors", "scene.json", "index.html", "metrics.json")


pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class World:
    root: Path
    synth: Path  # generated dataset (read-only for cases: they copy what they corrupt)
    ckpt: Path  # pretrained dir matching MODEL + NO_MOTION, 2 context + 6 target views
    ckpt_dim: Path  # another architecture (dim 32)
    ckpt_views: Path  # another view count (3 targets)
    truncated: Path
    foreign: Path


@dataclass
class Expect:
    argv: list[str]
    needles: tuple[str, ...] = ()  # substrings of the error line
    rc: int = 2
    check: Callable[[subprocess.CompletedProcess], None] | None = None  # extra checks after the run
    clean: bool = True  # no finished-work markers may exist in the case directory afterwards
    watch: Path | None = None  # directory whose files must not change (an existing run)
    before: dict = field(default_factory=dict)


def _copy(w: World, d: Path, rel: str) -> Path:
    dst = d / "data" / rel
    shutil.copytree(w.synth / rel, dst)
    return dst


def train_cmd(d: Path, data_root: Path, *extra: str) -> list[str]:
    return [PY, str(REPO / "train.py"), "--config", str(TRAIN_CFG), *MODEL, *QUIET, "training.batch_size=2",
            "training.max_steps=2", f"training.output_dir={d / 'exp'}", f"data.root={data_root}", *extra]


def infer_cmd(w: World, d: Path, data_root: Path, *extra: str) -> list[str]:
    return [PY, str(REPO / "inference.py"), "--config", str(INFER_CFG), *MODEL, *NO_MOTION, *QUIET,
            f"inference.model_path={w.ckpt}", f"data.root={data_root}", f"inference_out_root={d / 'out'}", *extra]


def check_cmd(config: Path, data_root: Path, mode: str, *extra: str) -> list[str]:
    return [PY, "-m", "wildrayzer.cli", "data", "check", "--config", str(config), "--mode", mode, *MODEL,
            f"data.root={data_root}", *extra]


def _edit_json(path: Path, fn) -> None:
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _images(split_dir: Path, scene: str | None = None) -> list[Path]:
    return sorted((split_dir / "images").glob(f"{scene or '*'}/*.png"))


# ------------------------------------------------------------------------------------------------------- the cases
# Each case gets (world, private directory) and returns what to run and expect.

def corrupt_png(w, d):  # found while loading the first batch, inside a DataLoader worker process
    root = _copy(w, d, "re10k_processed_v2")
    for p in _images(root / "train"):
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    return Expect(train_cmd(d, root, "data.num_workers=2"), ("cannot read", "train/images/static_train_000", ".png",
                                                             "data.on_error=skip"))


def zero_byte_image(w, d):
    root = _copy(w, d, "dynamic_re10k")
    (root / "test/images/dynamic_test_0000/00000.png").write_bytes(b"")  # context view 0 of the view index
    return Expect(check_cmd(INFER_CFG, root, "eval"), ("dynamic_test_0000/00000.png",))


def rgba_and_odd_size_images_accepted(w, d):
    root = _copy(w, d, "dynamic_re10k")
    for i, p in enumerate(_images(root / "test")):
        rgb = Image.open(p).convert("RGB").resize((45 + i % 3, 37))  # neither side a multiple of the patch (8)
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.new("L", rgb.size, 40))  # mostly transparent: alpha must be dropped, not composited
        rgba.save(p)
    out = d / "out"

    def check(r):
        scene = out / "dynamic_test_0000"
        assert (scene / "scene.json").is_file() and (out / "index.html").is_file()
        im = Image.open(scene / "input_00.png")
        assert im.mode == "RGB" and im.size == (32, 32)
        assert np.asarray(im).mean() > 30  # colours kept (alpha 40/255 would darken a composite)

    return Expect(infer_cmd(w, d, root), rc=0, check=check, clean=False)


def grayscale_and_16bit_images_accepted(w, d):
    root = _copy(w, d, "re10k_processed_v2")
    for i, p in enumerate(_images(root / "train")):
        g = Image.open(p).convert("L").resize((50, 41))
        if i % 2:
            g = Image.fromarray(np.asarray(g).astype(np.uint16) * 257)  # 16-bit grayscale (I;16)
        g.save(p)

    def check(r):
        assert "loaded 2 item(s), skipped 0" in r.stdout, r.stdout

    return Expect(check_cmd(TRAIN_CFG, root, "train"), rc=0, check=check)


def image_size_not_multiple_of_patch(w, d):
    return Expect(train_cmd(d, w.synth / "re10k_processed_v2", "model.image_size=36"),
                  ("model.image_size=36", "model.patch_size=8"))


def invalid_json_metadata(w, d):
    root = _copy(w, d, "re10k_processed_v2")
    (root / "train/metadata/static_train_0001.json").write_text('{"scene_name": "static_train_0001", "frames": [')
    return Expect(train_cmd(d, root), ("static_train_0001.json", "not valid JSON"))


def metadata_missing_key(w, d):
    root = _copy(w, d, "dynamic_re10k")
    _edit_json(root / "test/metadata/dynamic_test_0000.json", lambda m: m["frames"][3].pop("fxfycxcy"))
    return Expect(infer_cmd(w, d, root), ("dynamic_test_0000.json", "fxfycxcy"))


def metadata_nonfinite_w2c(w, d):
    root = _copy(w, d, "dynamic_re10k")
    path = root / "test/metadata/dynamic_test_0000.json"
    path.write_text(path.read_text().replace("[0.0, 0.0, 0.0, 1.0]", "[0.0, 0.0, 0.0, Infinity]", 1))
    return Expect(check_cmd(INFER_CFG, root, "eval"), ("dynamic_test_0000.json", "non-finite w2c"))


def list_names_missing_file(w, d):
    root = _copy(w, d, "re10k_processed_v2")
    with open(root / "train/full_list.txt", "a") as f:
        f.write("metadata/ghost_scene.json\n")
    return Expect(train_cmd(d, root), ("metadata/ghost_scene.json", "full_list.txt"))


def empty_dataset_directory(w, d):
    (d / "empty").mkdir()
    return Expect(train_cmd(d, d / "empty"), ("empty/train", "data.root"))


def empty_list_file(w, d):
    root = _copy(w, d, "dynamic_re10k")
    (root / "test/dre10k_final_context_2.txt").write_text("\n")
    return Expect(infer_cmd(w, d, root), ("dre10k_final_context_2.txt", "empty"))


def view_idx_out_of_range(w, d):
    root = _copy(w, d, "dynamic_re10k")
    _edit_json(root / "test/dre10k_final_context_2_view_idx.json",
               lambda t: t["dynamic_test_0000"].__setitem__("context", [0, 99]))
    return Expect(infer_cmd(w, d, root), ("dre10k_final_context_2_view_idx.json", "view index 99", "out of range"))


def view_idx_too_few_targets(w, d):
    root = _copy(w, d, "dynamic_re10k")
    _edit_json(root / "test/dre10k_final_context_2_view_idx.json",
               lambda t: t["dynamic_test_0000"].__setitem__("target", [2, 3]))
    return Expect(infer_cmd(w, d, root), ("dre10k_final_context_2_view_idx.json", "num_target_views"))


def fewer_frames_than_views(w, d):  # 12 frames per scene, 2 + 20 views requested
    root = _copy(w, d, "re10k_processed_v2")
    return Expect(train_cmd(d, root, "model.num_target_views=20"), ("static_train_000", "12 frames", "22 views"))


def unknown_config_key(w, d):
    return Expect(infer_cmd(w, d, w.synth / "dynamic_re10k", "inference.modle_path=x"),
                  ("inference.modle_path", "did you mean 'inference.model_path'"))


def unknown_key_in_config_file(w, d):
    cfg = d / "my.yaml"
    cfg.write_text(f"base: {TRAIN_CFG}\ndata:\n  frame_gap_mx: 4\n")
    return Expect(check_cmd(cfg, w.synth / "re10k_processed_v2", "train"), ("data.frame_gap_mx", "my.yaml"))


def wrong_value_type(w, d):
    return Expect(train_cmd(d, w.synth / "re10k_processed_v2", "training.batch_size=two"), ("training.batch_size",))


def bad_choice_value(w, d):
    return Expect(train_cmd(d, w.synth / "re10k_processed_v2", "data.on_error=ignore"), ("data.on_error", "skip"))


def missing_config_file(w, d):
    argv = infer_cmd(w, d, w.synth / "dynamic_re10k")
    argv[argv.index(str(INFER_CFG))] = str(d / "nope.yaml")
    return Expect(argv, ("config file not found", "nope.yaml"))


def invalid_yaml_config(w, d):
    cfg = d / "broken.yaml"
    cfg.write_text("model:\n  dim: [64,\n")
    argv = train_cmd(d, w.synth / "re10k_processed_v2")
    argv[argv.index(str(TRAIN_CFG))] = str(cfg)
    return Expect(argv, ("broken.yaml", "not valid YAML"))


def checkpoint_of_other_architecture(w, d):
    return Expect(infer_cmd(w, d, w.synth / "dynamic_re10k", f"inference.model_path={w.ckpt_dim}"),
                  ("ckpt_dim", "model.dim: checkpoint 32 vs config 64"))


def checkpoint_of_other_view_count(w, d):
    return Expect(infer_cmd(w, d, w.synth / "dynamic_re10k", f"inference.model_path={w.ckpt_views}"),
                  ("ckpt_views", "model.num_target_views: checkpoint 3 vs config 6"))


def truncated_checkpoint(w, d):
    return Expect(infer_cmd(w, d, w.synth / "dynamic_re10k", f"inference.model_path={w.truncated}"),
                  ("truncated.safetensors", "not a readable safetensors"))


def foreign_checkpoint(w, d):
    return Expect(infer_cmd(w, d, w.synth / "dynamic_re10k", f"inference.model_path={w.foreign}"),
                  ("foreign.safetensors", "not a WildRayZer checkpoint"))


def missing_checkpoint(w, d):
    return Expect(infer_cmd(w, d, w.synth / "dynamic_re10k", f"inference.model_path={d / 'nowhere'}"),
                  ("checkpoint not found", "nowhere"))


def init_from_other_architecture(w, d):
    return Expect(train_cmd(d, w.synth / "re10k_processed_v2", f"training.init_from={w.ckpt_dim}"),
                  ("training.init_from", "model.dim: checkpoint 32 vs config 64"))


def init_from_truncated_checkpoint(w, d):
    return Expect(train_cmd(d, w.synth / "re10k_processed_v2", f"training.init_from={w.truncated}"),
                  ("truncated.safetensors",))


def resume_with_other_view_count(w, d):
    from wildrayzer.config import load_config
    from wildrayzer.model import WildRayZerModel
    from wildrayzer.train.checkpoint import save_checkpoint

    cfg = load_config(TRAIN_CFG, MODEL + [f"training.output_dir={d / 'exp'}"])
    run = d / "exp" / cfg.training.run_name
    save_checkpoint(run, 7, WildRayZerModel(cfg.model), cfg, {"step": 7})
    return Expect(train_cmd(d, w.synth / "re10k_processed_v2", "model.num_target_views=3"),
                  ("resume checkpoint", "ckpt_00000007", "num_target_views: checkpoint 6 vs config 3"),
                  clean=False, watch=run)


def training_output_dir_not_writable(w, d):
    (d / "afile").write_text("a regular file, not a folder")  # root ignores chmod; a file parent always blocks
    return Expect(train_cmd(d, w.synth / "re10k_processed_v2", f"training.output_dir={d / 'afile' / 'out'}"),
                  ("afile/out", "training.output_dir"))


def inference_out_root_not_writable(w, d):
    (d / "afile").write_text("a regular file, not a folder")
    return Expect(infer_cmd(w, d, w.synth / "dynamic_re10k", f"inference_out_root={d / 'afile' / 'out'}"),
                  ("inference_out_root", "afile/out", "not writable"))


def inference_out_root_inside_data(w, d):
    root = _copy(w, d, "dynamic_re10k")

    def check(r):
        assert not (root / "test" / "results").exists()

    return Expect(infer_cmd(w, d, root, f"inference_out_root={root / 'test' / 'results'}"),
                  ("inference_out_root", "inside the dataset"), check=check)


def import_scene_name_with_dotdot(w, d):
    photos = d / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(photos / f"{i}.png")

    def check(r):
        assert sorted(p.name for p in d.iterdir()) == ["photos"], "nothing written next to or above --out"

    return Expect([PY, "-m", "wildrayzer.cli", "data", "import", "--images", str(photos), "--out",
                   str(d / "imported"), "--scene", "../../escaped"], ("invalid scene name", "../../escaped"),
                  check=check)


def import_corrupt_photo(w, d):
    photos = d / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(photos / f"{i}.png")
    (photos / "3.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")

    def check(r):  # no metadata / list entry: the loaders cannot pick up the half-imported scene
        assert not list((d / "imported").rglob("*.json")) and not list((d / "imported").rglob("full_list.txt"))

    return Expect([PY, "-m", "wildrayzer.cli", "data", "import", "--images", str(photos), "--out",
                   str(d / "imported")], ("3.jpg", "cannot read image"), check=check)


CASES = [corrupt_png, zero_byte_image, rgba_and_odd_size_images_accepted, grayscale_and_16bit_images_accepted,
         image_size_not_multiple_of_patch, invalid_json_metadata, metadata_missing_key, metadata_nonfinite_w2c,
         list_names_missing_file, empty_dataset_directory, empty_list_file, view_idx_out_of_range,
         view_idx_too_few_targets, fewer_frames_than_views, unknown_config_key, unknown_key_in_config_file,
         wrong_value_type, bad_choice_value, missing_config_file, invalid_yaml_config,
         checkpoint_of_other_architecture, checkpoint_of_other_view_count, truncated_checkpoint, foreign_checkpoint,
         missing_checkpoint, init_from_other_architecture, init_from_truncated_checkpoint,
         resume_with_other_view_count, training_output_dir_not_writable, inference_out_root_not_writable,
         inference_out_root_inside_data, import_scene_name_with_dotdot, import_corrupt_photo]


# ----------------------------------------------------------------------------------------------------- fixtures
def _make_world(root: Path) -> World:
    from wildrayzer.config import load_config
    from wildrayzer.model import WildRayZerModel
    from wildrayzer.weights import save_pretrained

    small_synth(root / "synth")
    torch.manual_seed(0)

    def pretrained(name, *extra):
        cfg = load_config(INFER_CFG, MODEL + NO_MOTION + list(extra))
        return save_pretrained(WildRayZerModel(cfg.model), cfg, root / name)

    ckpt = pretrained("ckpt")
    pretrained("ckpt_dim", "model.dim=32")
    pretrained("ckpt_views", "model.num_target_views=3")
    good = (ckpt / "model.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    save_file({"weight": torch.zeros(3)}, str(root / "foreign.safetensors"))
    return World(root, root / "synth", ckpt, root / "ckpt_dim", root / "ckpt_views", root / "truncated.safetensors",
                 root / "foreign.safetensors")


def _snapshot(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_mtime_ns, p.stat().st_size) for p in d.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return _make_world(tmp_path_factory.mktemp("world"))


def _prepare(w: World, case, where: Path) -> tuple[Path, Expect]:
    d = where / case.__name__
    d.mkdir(parents=True)
    exp = case(w, d)
    if exp.watch is not None:
        exp.before = _snapshot(exp.watch)
    return d, exp


def _finished_markers(d: Path) -> list[str]:
    data = d / "data"
    return [str(p.relative_to(d)) for pat in FINISHED_MARKERS for p in d.rglob(pat) if data not in p.parents]


def _verify(d: Path, exp: Expect, r: subprocess.CompletedProcess, early: bool = False) -> None:
    detail = f"\n--- argv: {' '.join(exp.argv)}\n--- stdout:\n{r.stdout[-2000:]}\n--- stderr:\n{r.stderr[-3000:]}"
    assert r.returncode == exp.rc, detail
    assert "Traceback" not in r.stderr, detail
    if exp.rc == 2:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], detail  # one error line, and it is the last thing said
        assert all(ln.startswith(TRAIN_NOTES) for ln in lines[:-1]), detail  # before it: only training notes
        for needle in exp.needles:
            assert needle in errors[0], f"'{needle}' not in the message{detail}"
        assert len(errors[0]) < 600, detail
        if early:  # found before any work starts: the error line is all there is
            assert len(lines) == 1, detail
    if exp.clean:
        assert not _finished_markers(d), f"{_finished_markers(d)}{detail}"
    if exp.watch is not None:
        assert _snapshot(exp.watch) == exp.before, "an existing run was modified by a failed start"
    if exp.check is not None:
        exp.check(r)


def _cli_argv(argv: list[str]) -> list[str]:
    """[python, train.py | inference.py | -m wildrayzer.cli, ...] -> the argv of ``wildrayzer.cli.main``."""
    if argv[1] == "-m":
        assert argv[2] == "wildrayzer.cli"
        return argv[3:]
    return [{"train.py": "train", "inference.py": "infer"}[Path(argv[1]).name], *argv[2:]]


# Config, checkpoint, output-folder and index errors.
EARLY = {"image_size_not_multiple_of_patch", "unknown_config_key", "unknown_key_in_config_file", "wrong_value_type",
         "bad_choice_value", "missing_config_file", "invalid_yaml_config", "checkpoint_of_other_architecture",
         "checkpoint_of_other_view_count", "truncated_checkpoint", "missing_checkpoint",
         "training_output_dir_not_writable", "inference_out_root_not_writable", "inference_out_root_inside_data",
         "metadata_missing_key", "view_idx_out_of_range", "metadata_nonfinite_w2c", "zero_byte_image"}
NAMES = [c.__name__ for c in CASES]
BY_NAME = {c.__name__: c for c in CASES}


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_via_entry_point(world, name, tmp_path, monkeypatch, capsys):
    from wildrayzer.cli import main as cli_main

    d, exp = _prepare(world, BY_NAME[name], tmp_path)
    monkeypatch.chdir(d)
    monkeypatch.delenv("WILDRAYZER_DEBUG", raising=False)
    rc = cli_main(_cli_argv(exp.argv))
    out = capsys.readouterr()
    _verify(d, exp, subprocess.CompletedProcess(exp.argv, rc, out.out, out.err), early=name in EARLY)


# One case per entry point (and the DataLoader-worker path) stays in the fast suite as a real subprocess.
FAST_SUBPROCESS = {"corrupt_png", "metadata_nonfinite_w2c", "checkpoint_of_other_view_count",
                   "training_output_dir_not_writable"}
SUBPROCESS_PARAMS = [pytest.param(n, marks=() if n in FAST_SUBPROCESS else pytest.mark.slow) for n in NAMES]


@pytest.fixture(scope="module")
def subprocess_results(request, world):
    """Run the selected subprocess cases concurrently, once."""
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.originalname == "test_bad_input_via_subprocess" and hasattr(item, "callspec")]
    prepared = {name: _prepare(world, BY_NAME[name], world.root / "subprocess") for name in dict.fromkeys(selected)}
    env = {k: v for k, v in os.environ.items() if k != "WILDRAYZER_DEBUG"}
    env["OMP_NUM_THREADS"] = "1"

    def run(name):
        d, exp = prepared[name]
        return name, subprocess.run(exp.argv, cwd=d, capture_output=True, text=True, timeout=400, env=env)

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(pool.map(run, prepared))
    return {name: (*prepared[name], done[name]) for name in prepared}


@pytest.mark.parametrize("name", SUBPROCESS_PARAMS)
def test_bad_input_via_subprocess(subprocess_results, name):
    _verify(*subprocess_results[name], early=name in EARLY)


def test_debug_flag_keeps_the_traceback(world, tmp_path, monkeypatch):
    from wildrayzer.cli import main as cli_main
    from wildrayzer.errors import CheckpointError

    monkeypatch.delenv("WILDRAYZER_DEBUG", raising=False)
    d, exp = _prepare(world, checkpoint_of_other_view_count, tmp_path)
    with pytest.raises(CheckpointError, match="num_target_views"):
        cli_main([*_cli_argv(exp.argv), "--debug"])
