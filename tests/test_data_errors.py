"""Bad dataset input: one-line DataError naming scene + file (on_error=raise), or skipped and counted (skip)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from wildrayzer.cli import main as cli_main
from wildrayzer.config import load_config
from wildrayzer.data import build_dataset
from wildrayzer.data.synthetic import SynthParams, generate
from wildrayzer.errors import DataError

PARAMS = SynthParams(static_train=0, static_test=0, dynamic_train=3, dynamic_test=1, frames=10, res=24, seed=2,
                     coco_images=0)
SCENE = "dynamic_train_0001"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("errors")
    generate(out, PARAMS, progress=False)
    return out / "dynamic_re10k"


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    shutil.copytree(pristine, tmp_path / "dynamic_re10k")
    return tmp_path / "dynamic_re10k"


def overrides(root: Path, on_error: str, *extra: str) -> list[str]:
    return [f"data.root={root}", "data.dataset=dynamic", "model.image_size=16", "model.patch_size=8",
            "model.num_target_views=3", "data.frame_gap_max=8", f"data.on_error={on_error}", *extra]


def cfg_for(root: Path, on_error: str, *extra: str):
    return load_config(None, overrides(root, on_error, *extra))


def _edit_meta(root: Path, fn) -> Path:
    path = root / "train" / "metadata" / f"{SCENE}.json"
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))
    return path


# Corruptions of scene 1 that the index catches in __init__: (name, corrupt(root) -> file named in the message).
def _invalid_json(root):
    p = root / "train" / "metadata" / f"{SCENE}.json"
    p.write_text('{"scene_name": "x", "frames": [')
    return p.name


def _missing_key(root):
    return _edit_meta(root, lambda m: m["frames"][4].pop("w2c")).name


def _nonfinite(root):
    return _edit_meta(root, lambda m: m["frames"][2]["w2c"][0].__setitem__(3, float("nan"))).name


def _few_frames(root):
    return _edit_meta(root, lambda m: m.__setitem__("frames", m["frames"][:3])).name


def _bad_shape(root):
    return _edit_meta(root, lambda m: m["frames"][0].__setitem__("fxfycxcy", [1.0, 2.0])).name


def _listed_missing(root):
    (root / "train" / "metadata" / f"{SCENE}.json").unlink()
    return f"{SCENE}.json"


def _images_gone(root):
    shutil.rmtree(root / "train" / "images" / SCENE)
    return "00000.png"


INDEX_CASES = [_invalid_json, _missing_key, _nonfinite, _few_frames, _bad_shape, _listed_missing, _images_gone]


@pytest.mark.parametrize("corrupt", INDEX_CASES, ids=lambda f: f.__name__.strip("_"))
def test_index_errors_raise_or_skip(root, corrupt, caplog):
    named = corrupt(root)
    with pytest.raises(DataError) as err:
        build_dataset(cfg_for(root, "raise"), "train")
    msg = str(err.value)
    assert "\n" not in msg and named in msg, msg
    if corrupt is not _invalid_json:  # the scene name is only known from parseable metadata or its file name
        assert SCENE in msg, msg
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(cfg_for(root, "skip"), "train")
    assert len(ds) == 2 and ds.skipped == 1 and SCENE not in {ds[i]["scene"] for i in range(2)}
    assert any("skipped" in r.message for r in caplog.records)


# Corruptions found only when the sample is loaded (eval mode, no index: views 0, 8, 1, 4, 7 are read).
def _missing_image(root):
    (root / "train" / "images" / SCENE / "00008.png").unlink()
    return "00008.png"


def _corrupt_png(root):
    (root / "train" / "images" / SCENE / "00008.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return "00008.png"


def _truncated_png(root):
    p = root / "train" / "images" / SCENE / "00004.png"
    p.write_bytes(p.read_bytes()[:60])
    return "00004.png"


def _missing_mask(root):
    (root / "train" / "binary_masks" / SCENE / "00007.png").unlink()
    return "00007.png"


LOAD_CASES = [_missing_image, _corrupt_png, _truncated_png, _missing_mask]


@pytest.mark.parametrize("corrupt", LOAD_CASES, ids=lambda f: f.__name__.strip("_"))
def test_load_errors_raise_or_skip(root, corrupt, caplog):
    named = corrupt(root)
    ds = build_dataset(cfg_for(root, "raise"), "eval")
    assert ds[0]["scene"] == "dynamic_train_0000"
    with pytest.raises(DataError) as err:
        ds[1]
    msg = str(err.value)
    assert "\n" not in msg and named in msg and SCENE in msg, msg
    ds = build_dataset(cfg_for(root, "skip"), "eval")
    with caplog.at_level(logging.WARNING):
        item = ds[1]  # falls through to the next good sample
    assert item["scene"] == "dynamic_train_0002" and ds.skipped == 1
    assert any(SCENE in r.getMessage() for r in caplog.records)


def test_view_index_out_of_range_and_malformed(root):
    test = root / "test"
    table = json.loads((test / "dre10k_final_context_2_view_idx.json").read_text())
    table["dynamic_test_0000"]["target"][1] = 99
    (test / "bad.json").write_text(json.dumps(table))
    extra = ("data.split=test", "data.view_idx_file=bad.json")
    with pytest.raises(DataError, match=r"dynamic_test_0000.*99.*out of range"):
        build_dataset(cfg_for(root, "raise", *extra), "eval")
    with pytest.raises(DataError, match="no usable scenes"):  # the only test scene is skipped
        build_dataset(cfg_for(root, "skip", *extra), "eval")
    (test / "bad.json").write_text("{oops")
    with pytest.raises(DataError, match="bad.json is not valid JSON"):
        build_dataset(cfg_for(root, "skip", *extra), "eval")
    with pytest.raises(DataError, match="view index file .*missing.json not found"):
        build_dataset(cfg_for(root, "raise", "data.split=test", "data.view_idx_file=missing.json"), "eval")


@pytest.mark.parametrize("case", ["no_root", "empty_dir", "no_list", "empty_list"])
def test_unusable_directories_always_raise(root, tmp_path, case):
    target = root
    if case == "no_root":
        target = tmp_path / "nowhere"
    elif case == "empty_dir":
        target = tmp_path / "empty"
        (target / "train").mkdir(parents=True)
    elif case == "no_list":
        (root / "train" / "full_list.txt").unlink()
    else:
        (root / "train" / "full_list.txt").write_text("\n")
    for mode in ("raise", "skip"):
        with pytest.raises(DataError) as err:
            build_dataset(cfg_for(target, mode), "train")
        assert "\n" not in str(err.value)


def test_cli_check_exits_2_on_bad_data_and_0_when_skipping(root, tmp_path, capsys):
    _corrupt_png(root)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}\n")
    assert cli_main(["data", "check", "--config", str(cfg), "--mode", "eval", *overrides(root, "raise")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and SCENE in err and "00008.png" in err and "\n" not in err
    assert cli_main(["data", "check", "--config", str(cfg), "--mode", "eval", *overrides(root, "skip")]) == 0
    assert "skipped 1" in capsys.readouterr().out
