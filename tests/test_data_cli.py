"""``wildrayzer data synth | import``: end to end through the console entry point, loaded back by the loaders."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from tiny_run import photos

from wildrayzer.cli import main as cli_main
from wildrayzer.config import load_config
from wildrayzer.data import build_dataset
from wildrayzer.data.synthetic import MARKER


def test_synth_cli_writes_a_loadable_tree(tmp_path, capsys):
    out = tmp_path / "synthetic"
    args = ["data", "synth", "--out", str(out), "--scenes", "2", "--test-scenes", "1", "--frames", "8", "--res", "16",
            "--coco-images", "1", "--seed", "4", "--no-progress"]
    assert cli_main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["scenes"] == 6 and summary["frames"] == 48
    assert json.loads((out / MARKER).read_text())["params"]["seed"] == 4
    cfg = load_config(None, [f"data.root={out / 'dynamic_re10k'}", "data.dataset=dynamic", "data.split=test",
                             "data.list_file=wildrayzer_final_context_2.txt", "model.image_size=16",
                             "model.patch_size=8", "data.view_idx_file=wildrayzer_final_context_2_view_idx.json"])
    item = build_dataset(cfg, "eval")[0]
    assert item["images"].shape == (8, 3, 16, 16) and item["motion_masks"].shape == (8, 1, 16, 16)
    assert cli_main(["data", "synth", "--out", str(tmp_path / "x"), "--frames", "3"]) == 2  # too few frames
    assert "frames" in capsys.readouterr().err
    for flag, values in (("--transient-travel", ["3", "1"]), ("--transient-distance", ["0.1", "1"]),
                         ("--transient-scale", ["0"])):
        assert cli_main(["data", "synth", "--out", str(tmp_path / "y"), flag, *values]) == 2
        assert flag in capsys.readouterr().err
        assert not (tmp_path / "y").exists()


def _tree_cfg(out, *extra):
    return load_config(None, [f"data.root={out}", "data.split=test", "data.view_idx_file=view_idx.json",
                              "model.image_size=32", "model.patch_size=8", *extra])


def test_import_photos_with_and_without_exif(tmp_path, capsys):
    photos = tmp_path / "my photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        im = Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8))
        ex = im.getexif()
        if i == 0:
            ex.get_ifd(0x8769)[0xA405] = 28  # FocalLengthIn35mmFilm
        im.save(photos / f"IMG_{i:02d}.jpg", exif=ex)
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "mine"
    assert cli_main(["data", "import", "--images", str(photos), "--out", str(out), "--res", "30"]) == 0
    assert "default_fov" in capsys.readouterr().out
    meta = json.loads((out / "test" / "metadata" / "my photos.json").read_text())
    assert len(meta["frames"]) == 5 and meta["import"]["intrinsics_source"] == "default_fov+exif_35mm"
    assert meta["frames"][0]["fxfycxcy"] == pytest.approx([28 / 36 * 45, 28 / 36 * 45, 22.5, 15.0])
    f60 = 22.5 / math.tan(math.radians(30))
    assert meta["frames"][1]["fxfycxcy"] == pytest.approx([f60, f60, 22.5, 15.0])
    assert all(np.array_equal(f["w2c"], np.eye(4)) for f in meta["frames"])
    assert Image.open(out / "test" / meta["frames"][3]["image_path"]).size == (45, 30)
    idx = json.loads((out / "test" / "view_idx.json").read_text())
    assert idx == {"my photos": {"context": [0, 4], "target": [1, 1, 2, 2, 3, 3]}}
    item = build_dataset(_tree_cfg(out), "eval")[0]
    assert item["images"].shape == (8, 3, 32, 32) and item["scene"] == "my photos"


def test_import_video_every_nth_frame(tmp_path, capsys):
    import imageio.v2 as imageio

    video = tmp_path / "walk.mp4"
    writer = imageio.get_writer(str(video), fps=10, macro_block_size=1)
    for i in range(20):
        writer.append_data(np.full((48, 64, 3), i * 12, dtype=np.uint8))
    writer.close()
    out = tmp_path / "vid"
    assert cli_main(["data", "import", "--video", str(video), "--out", str(out), "--every", "2", "--max-frames",
                     "8", "--res", "0"]) == 0
    capsys.readouterr()
    meta = json.loads((out / "test" / "metadata" / "walk.json").read_text())
    assert len(meta["frames"]) == 8 and meta["import"]["intrinsics_source"] == "default_fov"
    means = [np.asarray(Image.open(out / "test" / f["image_path"])).mean() for f in meta["frames"]]
    assert np.all(np.diff(means) > 15), "every second frame, in order"
    item = build_dataset(_tree_cfg(out), "eval")[0]
    assert item["frame_idx"].tolist()[:2] == [0, 7]


def test_import_errors_exit_2(tmp_path, capsys):
    assert cli_main(["data", "import", "--images", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "empty").mkdir()
    assert cli_main(["data", "import", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "one").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "a.png")
    assert cli_main(["data", "import", "--images", str(tmp_path / "one"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"nope")
    assert cli_main(["data", "import", "--images", str(tmp_path / "bad"), "--out", str(tmp_path / "o")]) == 2
    assert cli_main(["data", "import", "--video", str(tmp_path / "x.mp4"), "--out", str(tmp_path / "o")]) == 2
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 5 and all(e.startswith("error: ") for e in errs)
    with pytest.raises(SystemExit) as e:  # argparse usage errors exit 2 by themselves
        cli_main(["data", "import", "--out", str(tmp_path / "o")])
    assert e.value.code == 2


def test_reimport_replaces_whole_scene_or_nothing(tmp_path, capsys):
    """Re-importing a scene name: a failed import leaves the old scene intact; a good one leaves no stale frames."""

    out = tmp_path / "tree"
    args = ["data", "import", "--out", str(out), "--scene", "room", "--res", "0"]
    assert cli_main([*args, "--images", str(photos(tmp_path, 5, name="v1"))]) == 0
    before = {p.name: p.read_bytes() for p in (out / "test").rglob("*") if p.is_file()}
    assert cli_main([*args, "--images", str(photos(tmp_path, 4, bad_at=3, name="v2"))]) == 2  # fails on the last frame
    assert "cannot read image" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in (out / "test").rglob("*") if p.is_file()}
    assert after == before, "a failed re-import changed the existing scene"
    assert [p.name for p in (out / "test" / "images").iterdir()] == ["room"], "staging folder left behind"
    assert cli_main([*args, "--images", str(photos(tmp_path, 3, name="v3"))]) == 0
    frames = sorted(p.name for p in (out / "test" / "images" / "room").iterdir())
    assert frames == ["00000.png", "00001.png", "00002.png"]
    assert len(json.loads((out / "test" / "metadata" / "room.json").read_text())["frames"]) == 3
    assert json.loads((out / "test" / "view_idx.json").read_text())["room"]["context"] == [0, 2]


def test_synth_cli_defaults_are_the_generators():
    """`wildrayzer data synth` without transient flags writes the default set (ensure_default_data's parameters)."""
    from wildrayzer.data.cli import _parser
    from wildrayzer.data.synthetic import SynthParams

    args = _parser().parse_args(["synth"])
    assert tuple(args.transient_distance) == SynthParams.transient_distance
    assert tuple(args.transient_travel) == SynthParams.transient_travel
    assert (args.frames, args.res, args.seed, args.coco_images) == (SynthParams.frames, SynthParams.res,
                                                                      SynthParams.seed, SynthParams.coco_images)
