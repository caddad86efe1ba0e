"""Inference runner end to end (``inference.py`` / ``wildrayzer infer``) on a generated dataset with a random tiny
checkpoint: per-scene files, cameras.json, metrics, report links, Plücker vis + video, resume, errors, torchrun."""

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from PIL import Image
from test_api import CONFIG, TINY, make_tiny_checkpoint
from tiny_run import run_cli

from wildrayzer.errors import UserError
from wildrayzer.fileio import write_marker
from wildrayzer.infer.run import check_output_root, safe_scene_dirname
from wildrayzer.infer.scene_io import SCENE_KIND, SCENE_MARKER

REPO = Path(__file__).resolve().parents[1]
SCENES = ["dynamic_test_0000", "dynamic_test_0001"]
METRIC_KEYS = {"psnr", "ssim", "lpips", "psnr_static", "ssim_static", "lpips_static", "psnr_clean", "mask_iou",
               "mask_iou_pooled", "mask_precision", "mask_recall", "pose_rot_deg", "pose_trans_rel"}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_dataset(root: Path) -> Path:
    from wildrayzer.data.synthetic import SynthParams, generate

    generate(root, SynthParams(static_train=1, static_test=1, dynamic_train=1, dynamic_test=2, frames=12, res=32,
                               coco_images=2), progress=False)
    return root / "dynamic_re10k"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("infer")
    return {"base": base, "data": make_dataset(base / "data"), "ckpt": make_tiny_checkpoint(base / "ckpt", REPO)}


def infer_args(setup, out: Path, *extra: str) -> list[str]:
    return ["infer", "--config", str(REPO / CONFIG), f"inference.model_path={setup['ckpt']}",
            f"inference_out_root={out}", f"data.root={setup['data']}", "inference.device=cpu", *TINY, *extra]


@pytest.fixture(scope="module")
def first_run(setup):
    out = setup["base"] / "eval"
    rc, stdout, stderr = run_cli(infer_args(setup, out))
    assert rc == 0, stderr
    return {"out": out, "stdout": stdout}


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255


def referenced_files(index: Path) -> list[str]:
    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.links = []

        def handle_starttag(self, tag, attrs):
            self.links += [unquote(v) for k, v in attrs if k in ("src", "href") and v and not v.startswith("#")]

    p = Links()
    p.feed(index.read_text(encoding="utf-8"))
    return p.links


def test_every_scene_file_is_written(first_run):
    out = first_run["out"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == SCENES
    for scene in SCENES:
        d = out / scene
        names = {"cameras.json", "metrics.json", "scene.json", ".wildrayzer-scene"}
        for i in range(2):
            names |= {f"input_{i:02d}.png", f"input_{i:02d}_mask.png", f"input_{i:02d}_overlay.png",
                      f"input_{i:02d}_gt_overlay.png"}
        for j in range(6):
            names |= {f"render_{j:02d}.png", f"gt_{j:02d}.png", f"error_{j:02d}.png", f"clean_{j:02d}.png"}
        assert {p.name for p in d.iterdir()} == names
        mask = np.asarray(Image.open(d / "input_00_mask.png"))
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
    assert not list(out.glob(".tmp-*"))


def test_cameras_json_holds_the_predicted_cameras(setup, first_run):
    from wildrayzer.config import load_config
    from wildrayzer.data import build_dataset
    from wildrayzer.infer.pipeline import Pipeline

    cfg = load_config(REPO / CONFIG, TINY + [f"data.root={setup['data']}"])
    item = build_dataset(cfg, "eval")[0]
    pred = Pipeline.load(setup["ckpt"], device="cpu", semantic_cfg=cfg.semantic).run(item["images"][None])
    cams = json.loads((first_run["out"] / SCENES[0] / "cameras.json").read_text())
    assert cams["scene_name"] == SCENES[0] and len(cams["frames"]) == 8
    assert [f["role"] for f in cams["frames"]] == ["context"] * 2 + ["target"] * 6
    assert [f["frame_idx"] for f in cams["frames"]] == item["frame_idx"].tolist()
    c2w = torch.tensor([f["c2w"] for f in cams["frames"]], dtype=torch.float64)
    w2c = torch.tensor([f["w2c"] for f in cams["frames"]], dtype=torch.float64)
    k = torch.tensor([f["fxfycxcy"] for f in cams["frames"]])
    assert c2w.shape == (8, 4, 4) and k.shape == (8, 4)
    assert torch.allclose(c2w[0], torch.eye(4, dtype=torch.float64))
    assert torch.allclose(c2w @ w2c, torch.eye(4, dtype=torch.float64).expand(8, 4, 4), atol=1e-6)
    assert torch.allclose(c2w.float(), pred["cameras"]["c2w"][0], atol=1e-5)
    assert torch.allclose(k, pred["cameras"]["fxfycxcy"][0], atol=1e-4)
    assert not torch.allclose(c2w[1], c2w[0], atol=1e-3)  # the random camera head gives a non-trivial pose
    render0 = png(first_run["out"] / SCENES[0] / "render_00.png")
    ref = pred["renders"][0, 0].permute(1, 2, 0).numpy()
    assert np.abs(render0 - ref).max() <= 1 / 255 + 1e-6


def test_metrics_per_scene_and_summary(first_run):
    out = first_run["out"]
    per_scene = []
    for scene in SCENES:
        m = json.loads((out / scene / "metrics.json").read_text())
        assert m["scene"] == scene and set(m) == METRIC_KEYS | {"scene"}
        assert m["lpips"] is None and m["lpips_static"] is None  # no LPIPS weights: reported as null
        for key in ("psnr", "ssim", "psnr_static", "psnr_clean", "mask_iou", "pose_rot_deg"):
            assert isinstance(m[key], float) and np.isfinite(m[key]), key
        # PSNR recomputed from the written PNGs (8-bit rounding costs well under 0.1 dB here)
        mse = [np.mean((png(out / scene / f"render_{j:02d}.png") - png(out / scene / f"gt_{j:02d}.png")) ** 2)
               for j in range(6)]
        assert np.mean([-10 * np.log10(x) for x in mse]) == pytest.approx(m["psnr"], abs=0.1)
        per_scene.append(m)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["num_scenes"] == 2 and summary["mean"]["lpips"] is None
    assert summary["mean"]["psnr"] == pytest.approx(np.mean([m["psnr"] for m in per_scene]))
    assert summary["mean"]["pose_rot_deg"] == pytest.approx(np.mean([m["pose_rot_deg"] for m in per_scene]))
    assert set(summary["scenes"]) == set(SCENES)
    table = first_run["stdout"]
    assert "PSNR vs clean" in table and "n/a" in table and f"report: {(out / 'index.html').resolve()}" in table


def test_report_references_only_existing_files(first_run):
    out = first_run["out"]
    links = referenced_files(out / "index.html")
    assert links and all((out / rel).exists() for rel in links), [x for x in links if not (out / x).exists()]
    for scene in SCENES:  # every image of the scene is shown
        pngs = {f"{scene}/{p.name}" for p in (out / scene).glob("*.png")}
        assert pngs <= set(links), pngs - set(links)
    assert 'class="missing"' not in (out / "index.html").read_text()


def test_plucker_vis_and_video_files(setup):
    out = setup["base"] / "eval_vis"
    rc, _, err = run_cli(infer_args(setup, out, "inference.max_scenes=1", "inference.save_plucker_vis=true",
                                    "inference.plucker_vis_include_quiver=true", "inference.plucker_vis_stride=8",
                                    "inference.render_video=true", "inference.video_frames=4"))
    assert rc == 0, err
    d = out / SCENES[0]
    for j in range(6):
        for kind in ("direction", "moment", "residual", "quiver"):
            assert (d / f"target_{j:02d}_plucker_{kind}.png").is_file()
    frames = [np.asarray(f.convert("RGB"), dtype=np.int16) for f in _gif_frames(d / "video.gif")]
    assert len(frames) == 2 * 4 - 2 and frames[0].shape == (32, 32, 3)  # ping-pong path 0 -> 1 -> 0
    assert np.abs(frames[1] - frames[5]).max() <= 8 and np.abs(frames[2] - frames[4]).max() <= 8
    assert np.abs(frames[0] - frames[3]).max() > 8  # it moves
    links = referenced_files(out / "index.html")
    assert f"{SCENES[0]}/video.gif" in links and f"{SCENES[0]}/target_05_plucker_quiver.png" in links
    assert all((out / rel).exists() for rel in links)


def _gif_frames(path: Path):
    from PIL import ImageSequence

    with Image.open(path) as im:
        return [f.copy() for f in ImageSequence.Iterator(im)]


def test_rerun_skips_finished_scenes_and_redoes_missing_ones(setup, first_run):
    out = setup["base"] / "eval_resume"
    shutil.copytree(first_run["out"], out)
    kept = {p: p.stat().st_mtime_ns for p in (out / SCENES[0]).iterdir()}
    shutil.rmtree(out / SCENES[1])
    # leftovers of a killed run (temp folders carry the runner's marker from their first moment): a half-written temp
    # folder (even with a record inside) is not a finished scene; an empty one was killed before its marker
    partial = out / f".tmp-{SCENES[1]}"
    partial.mkdir()
    write_marker(partial, SCENE_MARKER, SCENE_KIND)
    (partial / "scene.json").write_text("{}")
    (out / ".tmp-stale").mkdir()
    write_marker(out / ".tmp-stale", SCENE_MARKER, SCENE_KIND)
    (out / ".tmp-empty").mkdir()
    (out / ".tmp-notmine").mkdir()  # named like a temp folder but without the marker: not the runner's to delete
    (out / ".tmp-notmine" / "keep.txt").write_text("user file")
    rc, stdout, err = run_cli(infer_args(setup, out))
    assert rc == 0, err
    assert {p: p.stat().st_mtime_ns for p in (out / SCENES[0]).iterdir()} == kept
    assert json.loads((out / SCENES[1] / "scene.json").read_text())["name"] == SCENES[1]
    assert (out / SCENES[1] / "render_05.png").is_file()
    assert [p.name for p in out.glob(".tmp-*")] == [".tmp-notmine"]
    assert (out / ".tmp-notmine" / "keep.txt").read_text() == "user file"
    before = json.loads((first_run["out"] / "metrics.json").read_text())
    after = json.loads((out / "metrics.json").read_text())
    assert after["mean"] == pytest.approx(before["mean"]) and after["num_scenes"] == 2


def test_rerun_with_another_checkpoint_redoes_the_scene(setup, first_run, tmp_path):
    out = tmp_path / "eval"
    shutil.copytree(first_run["out"], out)
    record = out / SCENES[0] / "scene.json"
    old_mtime, old_psnr = record.stat().st_mtime_ns, json.loads(record.read_text())["metrics"]["psnr"]
    other = make_tiny_checkpoint(tmp_path / "other", REPO, seed=1)
    rc, _, err = run_cli(infer_args(setup, out, f"inference.model_path={other}", "inference.max_scenes=1"))
    assert rc == 0, err
    assert record.stat().st_mtime_ns != old_mtime  # not the stale result of the first checkpoint
    new = json.loads((out / "metrics.json").read_text())
    assert new["num_scenes"] == 1 and new["checkpoint"] == str(other)
    assert new["mean"]["psnr"] != pytest.approx(old_psnr, abs=1e-6)


def test_view_count_mismatch_is_one_line_exit_2(setup, tmp_path):
    rc, _, err = run_cli(infer_args(setup, tmp_path / "o", "model.num_target_views=3"))
    assert rc == 2 and err.count("\n") == 1
    assert "num_target_views: checkpoint 6 vs config 3" in err


def test_semantic_features_unlike_training_are_one_line_exit_2(setup, tmp_path):
    rc, _, err = run_cli(infer_args(setup, tmp_path / "o", "semantic.feature_size=16"))
    assert rc == 2 and err.count("\n") == 1
    assert "semantic.feature_size=16 but" in err and "set semantic.feature_size=4" in err


def test_missing_checkpoint_exit_2_with_download_hint(setup, tmp_path):
    rc, _, err = run_cli(infer_args(setup, tmp_path / "o", f"inference.model_path={tmp_path / 'nope.pt'}"))
    assert rc == 2 and err.count("\n") == 1
    assert "checkpoint not found" in err and "uva-cv-lab/wildrayzer-2view" in err and "DINOv3" in err
    assert not (tmp_path / "o").exists()


def test_published_config_without_the_released_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the published command, verbatim, where ./checkpoints/wildrayzer_2view.pt is absent
    rc, _, err = run_cli(["infer", "--config", str(REPO / "configs/wildrayzer_inference.yaml"),
                          "inference.model_path=./checkpoints/wildrayzer_2view.pt", "inference_out_root=out"])
    assert rc == 2 and err.count("\n") == 1
    assert "checkpoint not found: ./checkpoints/wildrayzer_2view.pt. Download the authors'" in err


def test_scene_names_and_output_root_are_safe(tmp_path):
    taken: set[str] = set()
    names = [safe_scene_dirname(n, taken) for n in ("../evil", "a/b", "a_b", "", "<x>", "index.html", "metrics.json")]
    assert names == ["evil", "a_b", "a_b_1", "scene", "x", "index.html_1", "metrics.json_1"]  # not the root's files
    assert all("/" not in n and not n.startswith(".") for n in names)
    with pytest.raises(UserError, match="inside the dataset"):
        check_output_root(tmp_path / "data" / "out", tmp_path / "data")


def test_torchrun_two_processes_match_one(setup, first_run, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2",
           str(REPO / "inference.py"), *infer_args(setup, out)[1:]]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("WildRayZer evaluation") == 1  # only rank 0 prints the table
    ddp = json.loads((out / "metrics.json").read_text())
    single = json.loads((first_run["out"] / "metrics.json").read_text())
    assert ddp["num_scenes"] == 2
    for key, value in single["mean"].items():
        assert ddp["mean"][key] == pytest.approx(value, rel=1e-5, abs=1e-6) if value is not None else \
            ddp["mean"][key] is None, key
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == SCENES


TEARDOWN_PROBE = """
import sys, time
import wildrayzer.distributed as d
import wildrayzer.infer.run as r
log, finalize, cleanup = sys.argv[1], r.finalize, d.cleanup

def slow_finalize(*a, **k):
    time.sleep(1.0)  # a report that takes a while to write
    out = finalize(*a, **k)
    open(log, "a").write(f"finalized {time.time()}\\n")
    if log.endswith("teardown_fail.log"):
        raise r.UserError("report failed")
    return out

def logged_cleanup():
    open(log, "a").write(f"cleanup {time.time()}\\n")
    cleanup()

r.finalize, d.cleanup = slow_finalize, logged_cleanup
from wildrayzer.cli import main
sys.exit(main(["infer", *sys.argv[2:]]))
"""


@pytest.mark.parametrize("outcome", ["ok", "fail"])
def test_no_rank_leaves_the_group_while_rank_0_writes_the_report(setup, tmp_path, outcome):
    """Rank 1 once destroyed the gloo group while rank 0 still wrote the report and aborted at exit; every rank now
    waits for the report (written or failed) before teardown, and a failed report still fails the run with its
    message."""
    probe, log = tmp_path / "probe.py", tmp_path / f"teardown_{outcome}.log"
    probe.write_text(TEARDOWN_PROBE)
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2", str(probe),
           str(log), *infer_args(setup, tmp_path / "out")[1:]]
    res = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=300)
    events = [(name, float(t)) for name, t in (line.split() for line in log.read_text().splitlines())]
    assert [n for n, _ in events].count("cleanup") == 2 and [n for n, _ in events].count("finalized") == 1
    finalized = next(t for n, t in events if n == "finalized")
    assert all(t >= finalized for n, t in events if n == "cleanup"), events
    if outcome == "ok":
        assert res.returncode == 0, res.stderr[-3000:]
    else:
        assert res.returncode != 0 and "error: report failed" in res.stderr, res.stderr[-3000:]


@pytest.mark.parametrize("option, message", [
    ("inference.split=train", "inference.split=train but data.split=test: the evaluated split is data.split"),
    ("inference.batch_size=4", "inference.batch_size=4 is not supported"),
    ("inference.compute_metrics=false", "inference.compute_metrics=false is not supported"),
])
def test_options_that_cannot_be_honoured_are_one_line_exit_2(setup, tmp_path, option, message):
    rc, _, err = run_cli(infer_args(setup, tmp_path / "o", option))
    assert rc == 2 and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "o").exists()
