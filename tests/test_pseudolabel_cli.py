"""`wildrayzer pseudolabel`: cache layout, resume, fingerprints, atomic writes, stage-1 rendering, user errors."""

import json
from pathlib import Path

import pytest
import torch

from wildrayzer import cli
from wildrayzer.config import load_config
from wildrayzer.errors import CheckpointError
from wildrayzer.pseudolabel.cache import PseudoLabelCache
from wildrayzer.pseudolabel.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = "configs/tiny/wildrayzer_stage2_motion_mask.yaml"



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from wildrayzer.data.synthetic import SynthParams, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthParams(static_train=0, static_test=0, dynamic_train=2, dynamic_test=0, frames=10, res=64,
                               coco_images=0), progress=False)
    return root / "dynamic_re10k"


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    from wildrayzer.model import WildRayZerModel
    from wildrayzer.weights import save_pretrained

    cfg = load_config(REPO / "configs/tiny/wildrayzer_stage1_pretrain.yaml", [])
    torch.manual_seed(0)
    return save_pretrained(WildRayZerModel(cfg.model), cfg, tmp_path_factory.mktemp("stage1"))


def _args(repo, synth, out, *extra):
    return ["--config", str(repo / TINY), "--out", str(out), f"data.root={synth}", "data.split=train",
            "logging.progress=false", *extra]


def _summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_clean_renders_label_resume_and_read(repo, synth, tmp_path, capsys):
    out = tmp_path / "cache"
    assert main(_args(repo, synth, out, "--renders", "clean", "pseudolabel.score_threshold=1.5")) == 0
    s = _summary(capsys)
    assert s["scenes_labelled"] == 2 and s["frames"] == 12 and s["unreliable_frames"] == 0
    # Perfect static renders: the constructor alone against the synthetic GT transients (0.85 measured).
    assert s["gt_iou_mean"] >= 0.6, s
    scenes = sorted(p.name for p in out.iterdir())
    assert scenes == ["dynamic_train_0000", "dynamic_train_0001"]
    meta = json.loads((out / scenes[0] / "labels.json").read_text())
    assert len(meta["frames"]) == 6 and len(meta["reliable"]) == 6 and len(meta["context_frames"]) == 2
    assert sorted(p.name for p in (out / scenes[0]).glob("*.png")) == [f"{f:06d}.png" for f in sorted(meta["frames"])]

    cache = PseudoLabelCache(out)
    masks, reliable = cache.read(scenes[0], meta["frames"][::-1])
    assert masks.shape == (6, 1, 64, 64) and reliable.all()
    assert set(masks.unique().tolist()) <= {0.0, 1.0} and masks.sum() > 0
    assert cache.read(scenes[0], [999]) is None and cache.read("nope", [0]) is None

    # Same settings: everything is skipped; other settings: recomputed in place.
    assert main(_args(repo, synth, out, "--renders", "clean", "pseudolabel.score_threshold=1.5")) == 0
    assert _summary(capsys)["scenes_skipped"] == 2
    assert main(_args(repo, synth, out, "--renders", "clean", "--max-scenes", "1",
                      "pseudolabel.score_threshold=3.0")) == 0
    assert _summary(capsys)["scenes_labelled"] == 1
    assert json.loads((out / scenes[0] / "labels.json").read_text())["fingerprint"] != meta["fingerprint"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_interrupted_write_leaves_no_partial_scene(repo, synth, tmp_path, monkeypatch, capsys):
    import cv2

    calls = {"n": 0}
    real = cv2.imwrite

    def flaky(path, img):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed in the middle of the first scene
        return real(path, img)

    monkeypatch.setattr(cv2, "imwrite", flaky)
    out = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        main(_args(repo, synth, out, "--renders", "clean"))
    assert list(out.iterdir()) == []  # neither a half-written scene nor a temporary directory
    monkeypatch.setattr(cv2, "imwrite", real)
    assert main(_args(repo, synth, out, "--renders", "clean", "--max-scenes", "1")) == 0
    assert _summary(capsys)["scenes_labelled"] == 1


def test_stage1_checkpoint_renders(repo, synth, stage1, tmp_path, capsys):
    out = tmp_path / "cache"
    assert main(_args(repo, synth, out, f"pseudolabel.stage1_checkpoint={stage1}")) == 0
    s = _summary(capsys)
    assert s["scenes_labelled"] == 2 and s["frames"] == 12
    # An untrained stage-1 model renders grey: every target falls under the 17 dB PSNR filter.
    assert s["unreliable_frames"] == 12
    meta = json.loads((out / "dynamic_train_0000" / "labels.json").read_text())
    assert max(meta["psnr"]) < 17.0 and meta["renders_from"].endswith("model.safetensors")


def test_a_stage3_checkpoint_renders_as_the_static_model(repo, synth, stage1, tmp_path, capsys):
    """A checkpoint with a motion head and MAE masking labels like its static part: same renders as without them."""
    from wildrayzer.model import WildRayZerModel
    from wildrayzer.weights import load_model_checkpoint, save_pretrained

    cfg = load_config(REPO / "configs/tiny/wildrayzer_stage3_joint_copy_paste.yaml", [])
    static = load_model_checkpoint(stage1).model
    full = WildRayZerModel(cfg.model, semantic_dim=152)
    full.load_state_dict(static.state_dict(), strict=False)  # same static weights, a fresh motion head
    path = save_pretrained(full, cfg, tmp_path / "stage3", semantic_dim=152)
    psnrs = []
    for name, ckpt in (("static", stage1), ("full", path)):
        assert main(_args(repo, synth, tmp_path / name, f"pseudolabel.stage1_checkpoint={ckpt}")) == 0
        psnrs.append(json.loads((tmp_path / name / "dynamic_train_0000" / "labels.json").read_text())["psnr"])
    assert psnrs[0] == psnrs[1]


def test_clean_context_renders_from_the_transient_free_context_only(repo, synth, stage1, tmp_path, capsys):
    """--renders clean-context: the stage-1 model renders each item as if its context views were the dataset's
    clean_images and its targets as given; the labels record that source, so a cache never mixes the two."""
    from wildrayzer.data import build_dataset
    from wildrayzer.errors import DataError
    from wildrayzer.pseudolabel.cli import stage1_renderer

    cfg = load_config(REPO / TINY, [f"data.root={synth}", "data.split=train",
                                    f"pseudolabel.stage1_checkpoint={stage1}"])
    item = build_dataset(cfg, "eval")[0]
    nc = int(cfg.model.num_context_views)
    assert not torch.equal(item["clean_images"][:nc], item["images"][:nc])  # the context holds transients
    plain = stage1_renderer(cfg, torch.device("cpu"))
    clean = stage1_renderer(cfg, torch.device("cpu"), clean_context=True)
    swapped = dict(item, images=torch.cat([item["clean_images"][:nc], item["images"][nc:]]))
    assert torch.equal(clean(item), plain(swapped)) and not torch.equal(clean(item), plain(item))
    with pytest.raises(DataError, match="clean_images"):
        clean({k: v for k, v in item.items() if k != "clean_images"})
    out = tmp_path / "cache"
    assert main(_args(repo, synth, out, "--renders", "clean-context", f"pseudolabel.stage1_checkpoint={stage1}",
                      "--max-scenes", "1")) == 0
    assert _summary(capsys)["scenes_labelled"] == 1
    meta = json.loads((out / "dynamic_train_0000" / "labels.json").read_text())
    assert meta["renders_from"].endswith("model.safetensors+clean-context")


def test_farthest_renders_and_labels_every_view(repo, synth, stage1, tmp_path, capsys):
    """pseudolabel.render_from=farthest: every view of an item, context ones too, is rendered from the two other views
    farthest from it in time and labelled; the summary keeps the targets' IoU apart from the context views'."""
    from wildrayzer.data import build_dataset
    from wildrayzer.pseudolabel.cli import stage1_renderer
    from wildrayzer.pseudolabel.far_context import farthest_views

    cfg = load_config(REPO / TINY, [f"data.root={synth}", "data.split=train", f"pseudolabel.stage1_checkpoint={stage1}",
                                    "pseudolabel.render_from=farthest"])
    item = build_dataset(cfg, "eval")[0]
    renders = stage1_renderer(cfg, torch.device("cpu"))(item)
    assert renders.shape == item["images"].shape
    ctx = farthest_views(item["frame_idx"][None], 2)[0, 0].tolist()  # view 0 from these two
    order = ctx + [i for i in range(len(renders)) if i not in ctx]
    plain = stage1_renderer(load_config(REPO / TINY, [f"pseudolabel.stage1_checkpoint={stage1}"]), torch.device("cpu"))
    torch.testing.assert_close(renders[0], plain(dict(item, images=item["images"][order]))[order.index(0) - 2])
    out = tmp_path / "cache"
    assert main(_args(repo, synth, out, f"pseudolabel.stage1_checkpoint={stage1}", "pseudolabel.render_from=farthest",
                      "--max-scenes", "1")) == 0
    s = _summary(capsys)
    assert s["frames"] == len(renders) and "gt_iou_mean" in s and "gt_iou_mean_context" in s
    meta = json.loads((out / "dynamic_train_0000" / "labels.json").read_text())
    assert meta["renders_from"].endswith("+farthest") and len(meta["psnr"]) == len(renders)
    rc = cli.main(["pseudolabel", *_args(repo, synth, tmp_path / "c", f"pseudolabel.stage1_checkpoint={stage1}",
                                         "pseudolabel.render_from=farthest", "--renders", "clean-context")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "clean-context" in err and "\n" not in err


def test_view_count_mismatch_is_a_checkpoint_error(repo, synth, stage1, tmp_path):
    with pytest.raises(CheckpointError, match="num_target_views"):
        main(_args(repo, synth, tmp_path / "c", f"pseudolabel.stage1_checkpoint={stage1}",
                   "model.num_target_views=4"))


@pytest.mark.parametrize("extra,needle", [
    ((), "pseudolabel.stage1_checkpoint"),
    (("pseudolabel.stage1_checkpoint=/nonexistent/run",), "/nonexistent/run"),
    (("--renders", "clean", "semantic.backbone=none"), "semantic.backbone"),
])
def test_user_errors_exit_2_with_one_line(repo, synth, tmp_path, capsys, extra, needle):
    rc = cli.main(["pseudolabel", *_args(repo, synth, tmp_path / "c", *extra)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err and needle in err


def test_labels_go_to_experiments_pseudolabels_by_default(repo, synth, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--config", str(repo / TINY), f"data.root={synth}", "data.split=train", "logging.progress=false",
                 "--renders", "clean", "--max-scenes", "1"]) == 0
    assert any((tmp_path / "experiments" / "pseudolabels").glob("*/labels.json"))


def test_an_empty_output_directory_is_a_user_error(repo, synth, capsys):
    rc = cli.main(["pseudolabel", "--config", str(repo / TINY), f"data.root={synth}", "--renders", "clean",
                   "--out", ""])
    assert rc == 2 and "--out" in capsys.readouterr().err


def test_the_removed_cache_key_is_unknown_but_dropped_from_stored_configs():
    from wildrayzer.config import from_container, to_container
    from wildrayzer.errors import ConfigError

    with pytest.raises(ConfigError, match="training.pseudolabel_cache"):
        load_config(None, ["training.pseudolabel_cache=x"])
    stored = to_container(load_config(None, []))
    stored["training"]["pseudolabel_cache"] = ""  # as in checkpoints written before the key was removed
    assert "pseudolabel_cache" not in from_container(stored).training
    load_config(REPO / "checkpoints/wildrayzer_tiny_2view/config.yaml")  # the shipped config reads as a config


def test_a_run_config_yaml_written_before_the_key_was_removed_still_loads(tmp_path, caplog):
    import yaml

    from wildrayzer.config import to_container

    stored = to_container(load_config(None, ["training.lr=0.003"]))
    stored["training"]["pseudolabel_cache"] = "experiments/pseudolabels"
    old = tmp_path / "config.yaml"
    old.write_text(yaml.safe_dump(stored))
    with caplog.at_level("WARNING"):
        cfg = load_config(old)
    assert cfg.training.lr == 0.003 and "pseudolabel_cache" not in cfg.training
    assert "ignoring retired key(s) training.pseudolabel_cache" in caplog.text
