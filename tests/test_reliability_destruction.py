"""Inference never deletes or overwrites what it did not write, and user-given names never leave their folder.

Each case hashes a whole directory tree (paths, kinds and file contents) before and after a real command
(``wildrayzer.cli.main`` in this process) and checks that nothing outside the run's own outputs changed; a refused
command exits 2 with one ``error:`` line. Output roots tried: a folder of unrelated files, a stand-in for the
repository root, the dataset's parent, a ``/``-like folder, a marked root with a foreign folder at a scene's name;
and the good path: a fresh root, then a second run into the same (now marked) root.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_run import (
    INFER_CFG,
    MODEL,
    NO_MOTION,
    QUIET,
    TRAIN_CFG,
    one_error_line,
    run_cli,
    small_synth,
    tiny_pretrained,
    tree,
)

from wildrayzer.errors import ConfigError, UserError
from wildrayzer.fileio import check_name, has_marker, write_marker
from wildrayzer.infer.run import ROOT_KIND, ROOT_MARKER, clear_partial
from wildrayzer.infer.scene_io import SCENE_KIND, SCENE_MARKER

pytestmark = pytest.mark.usefixtures("one_thread")

SCENES = ["dynamic_test_0000", "dynamic_test_0001"]
ROOT_FILES = {ROOT_MARKER, "index.html", "metrics.json"}


def populate(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            p.mkdir(exist_ok=True)
        else:
            p.write_text(text)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("destruction")
    synth = small_synth(base / "synth", dynamic_test=2)
    return {"synth": synth, "data": synth / "dynamic_re10k", "ckpt": tiny_pretrained(base / "ckpt")}


def infer(world, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(["infer", "--config", str(INFER_CFG), *MODEL, *NO_MOTION, *QUIET,
                    f"inference.model_path={world['ckpt']}", f"data.root={world['data']}",
                    f"inference_out_root={out}", "inference.device=cpu", *extra])


# ------------------------------------------------------------------------------------------- foreign output roots
REPO_LIKE = {"wildrayzer/__init__.py": "print('package')", "README.md": "# readme", "data/train/x.txt": "data",
             "dynamic_test_0000/notes.txt": "a folder named like a scene", "index.html": "<p>the user's page</p>",
             "metrics.json": "{\"user\": 1}", ".git/HEAD": "ref: refs/heads/main"}
ROOT_LIKE = {"home/user/.bashrc": "alias ll='ls -l'", "etc/passwd": "root:x:0:0", "tmp/": "",
             "dynamic_test_0001/": ""}


@pytest.mark.parametrize("layout", ["unrelated_files", "repository_root", "filesystem_root"])
def test_foreign_output_root_is_refused_and_untouched(world, tmp_path, layout):
    files = {"unrelated_files": {"notes.txt": "mine", "sub/photo.txt": "also mine"},
             "repository_root": REPO_LIKE, "filesystem_root": ROOT_LIKE}[layout]
    root = populate(tmp_path / "root", files)
    before = tree(tmp_path)
    rc, _, err = infer(world, root)
    one_error_line(rc, err, f"inference_out_root={root} is not empty", "was not created by WildRayZer",
                   ROOT_MARKER, "use a new or empty folder")
    assert tree(tmp_path) == before


def test_dataset_parent_as_output_root_is_refused(world):
    parent = world["synth"]
    before = tree(parent)
    rc, _, err = infer(world, parent)
    one_error_line(rc, err, f"inference_out_root={parent} is not empty", "dynamic_re10k", "use a new or empty folder")
    assert tree(parent) == before


def test_output_root_with_a_bad_marker_is_refused(world, tmp_path):
    root = populate(tmp_path / "root", {ROOT_MARKER: "not json", "keep.txt": "mine"})
    before = tree(tmp_path)
    rc, _, err = infer(world, root, "inference.max_scenes=1")
    one_error_line(rc, err, "was not created by WildRayZer")
    assert tree(tmp_path) == before


# ------------------------------------------------------------------------------------------- marked roots
@pytest.fixture(scope="module")
def one_scene_root(world, tmp_path_factory):
    """A marked root holding a finished run over the first scene only."""
    out = tmp_path_factory.mktemp("marked") / "eval"
    rc, _, err = infer(world, out, "inference.max_scenes=1")
    assert rc == 0, err
    return out


@pytest.mark.parametrize("name", [SCENES[1], f".tmp-{SCENES[1]}"])
def test_foreign_folder_at_a_scene_name_in_a_marked_root_is_refused(world, one_scene_root, tmp_path, name):
    root = tmp_path / "eval"
    shutil.copytree(one_scene_root, root)
    populate(root, {f"{name}/keep.txt": "not the runner's"})
    before = tree(tmp_path)
    rc, _, err = infer(world, root)  # both scenes: the second one's folder is foreign
    one_error_line(rc, err, f"{root / name} already exists and was not written by WildRayZer", SCENE_MARKER,
                   "move it away or use a new or empty inference_out_root")
    assert tree(tmp_path) == before


def test_fresh_root_then_rerun_replaces_only_its_own_scene_folders(world, tmp_path):
    sibling = populate(tmp_path / "sibling", {"keep.txt": "next to the output root"})
    root = tmp_path / "results" / "eval"
    outside = tree(tmp_path, skip=(root,))
    rc, _, err = infer(world, root)
    assert rc == 0, err
    assert has_marker(root, ROOT_MARKER, ROOT_KIND)
    assert all(has_marker(root / s, SCENE_MARKER, SCENE_KIND) for s in SCENES)
    assert {p.name for p in root.iterdir()} == ROOT_FILES | set(SCENES)
    assert tree(tmp_path, skip=(root,)) == {**outside, "results": "dir"}
    # what a user adds to the marked root later (files, folders, even a temp-looking folder) is not the runner's
    populate(root, {"notes.txt": "my notes", "extra/plot.txt": "mine", ".tmp-mine/keep.txt": "mine"})
    records = {s: (root / s / "scene.json").stat().st_mtime_ns for s in SCENES}
    kept = tree(tmp_path, skip=tuple(root / n for n in [*SCENES, "index.html", "metrics.json"]))
    rc, _, err = infer(world, root, "inference.plucker_vis_stride=4")  # another run key: every scene is redone
    assert rc == 0, err
    assert tree(tmp_path, skip=tuple(root / n for n in [*SCENES, "index.html", "metrics.json"])) == kept
    assert all((root / s / "scene.json").stat().st_mtime_ns != records[s] for s in SCENES)
    assert all(has_marker(root / s, SCENE_MARKER, SCENE_KIND) for s in SCENES)
    assert json.loads((root / "metrics.json").read_text())["num_scenes"] == 2
    assert (sibling / "keep.txt").read_text() == "next to the output root"


def test_clear_partial_removes_only_marked_temp_folders(tmp_path):
    ours = tmp_path / ".tmp-a"
    ours.mkdir()
    write_marker(ours, SCENE_MARKER, SCENE_KIND)
    (ours / "render_00.png").write_bytes(b"half")
    (tmp_path / ".tmp-empty").mkdir()  # killed between mkdir and the marker: nothing to lose
    populate(tmp_path, {".tmp-b/keep.txt": "no marker", ".tmp-c/.wildrayzer-scene": "{\"kind\": \"other\"}",
                        "tmpd/.wildrayzer-scene": json.dumps({"kind": SCENE_KIND, "version": 1})})
    (tmp_path / ".tmp-link").symlink_to(ours)  # a link to a marked folder is not itself the runner's folder
    clear_partial(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-b", ".tmp-c", ".tmp-link", "tmpd"]
    assert (tmp_path / ".tmp-b" / "keep.txt").is_file() and (tmp_path / "tmpd" / ".wildrayzer-scene").is_file()


# ------------------------------------------------------------------------------------------- names stay inside
@pytest.mark.parametrize("value", ["ok", "run-1.v2", "stage 1"])
def test_check_name_accepts_plain_names(value):
    assert check_name(value, "x") == value
    with pytest.raises(UserError, match=r"invalid --split '\.\./x': it contains a path separator"):
        check_name("../x", "--split")


@pytest.mark.parametrize("value", ["", "../../X", "a/b", "a\\b", "..", "a..b", ".hidden", "x\ny", "tab\there",
                                   "nul\x00", "é" * 200])
def test_check_name_refuses_names_that_leave_their_folder(value):
    with pytest.raises(ConfigError) as e:
        check_name(value, "training.run_name", ConfigError)
    msg = str(e.value)
    assert msg.startswith(f"invalid training.run_name {value!r}: ") and "\n" not in msg


@pytest.mark.parametrize("run_name", ["../../X", "a/b", ".hidden", "a..b", ".."])
def test_run_name_cannot_leave_the_output_dir(tmp_path, run_name):
    exp = tmp_path / "a" / "b" / "exp"
    before = tree(tmp_path)
    rc, _, err = run_cli(["train", "--config", str(TRAIN_CFG), *MODEL, *QUIET, f"training.output_dir={exp}",
                          f"training.run_name={run_name}", f"data.root={tmp_path / 'no_data'}"])
    one_error_line(rc, err, f"invalid training.run_name {run_name!r}")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("option, value, what", [
    ("--split", "../../X", "split (--split)"), ("--split", "a\\b", "split (--split)"),
    ("--split", ".hidden", "split (--split)"), ("--scene", "..", "scene name (--scene)"),
    ("--scene", "../x", "scene name (--scene)"), ("--scene", "a..b", "scene name (--scene)"),
])
def test_data_import_names_cannot_leave_the_output(tmp_path, option, value, what):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(photos / f"{i}.png")
    before = tree(tmp_path)
    rc, _, err = run_cli(["data", "import", "--images", str(photos), "--out", str(tmp_path / "a" / "b" / "imported"),
                          option, value])
    one_error_line(rc, err, f"invalid {what} {value!r}")
    assert tree(tmp_path) == before
