"""`benchmarks/quality.py` (``wildrayzer bench quality``): one command trains the schedule and writes the full table;
each row is evaluated with the run it names (round 1's stage 2 for the stage-2 rows, the last round's stage 3 for the
full model); ``--skip-train`` evaluates the same runs again without training anything."""

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["model.dim=32", "model.heads=2", "model.camera_layers=1", "model.scene_layers=1", "model.renderer_layers=1",
         "model.motion_layers=1", "model.motion_heads=2", "model.num_latents=8", "logging.progress=false",
         "logging.tensorboard=false"]
MODELS = ["mean colour / identity poses", "copy nearest context view / identity poses",
          "posed stage 1 (dataset cameras, LVSM-style)", "stage 1 RayZer (no masks)", "+ motion estimator (stage 2)",
          "+ MAE masking (stage 2 masks, no retraining)", "full WildRayZer (stage 3 + copy-paste)"]


@pytest.mark.slow
def test_quality_trains_two_rounds_and_evaluates_each_row_with_its_run(tmp_path, monkeypatch):
    from wildrayzer.cli import main as cli_main
    from wildrayzer.infer.pipeline import Pipeline

    loaded = []
    real_load = Pipeline.load.__func__

    def recording_load(cls, path, *a, **k):
        loaded.append(Path(path).resolve().relative_to((tmp_path / "q").resolve()).as_posix())
        return real_load(cls, path, *a, **k)

    monkeypatch.setattr(Pipeline, "load", classmethod(recording_load))
    monkeypatch.chdir(REPO)
    out = tmp_path / "q"
    args = ["bench", "quality", "--out", str(out), "--steps", "1", "1", "1", "--max-scenes", "1", "--posed-steps", "1",
            "--label-rounds", "2", *SMALL]
    assert cli_main(args) == 0
    runs = {p.name for p in (out / "views2").iterdir()}
    assert {"stage1", "stage2", "stage3", "stage2_round2", "stage3_round2", "posed"} <= runs
    result = json.loads((out / "quality.json").read_text())
    for split in ("dynamic test", "static test"):
        rows = [r for r in result["rows"] if r["split"] == split]
        assert [r["model"] for r in rows] == MODELS
        assert all(r["scenes"] == 1 for r in rows)
        for r in rows:
            assert r["metrics"]["psnr"] > 5  # a real evaluation, not an empty summary
    dyn = {r["model"]: r["metrics"] for r in result["rows"] if r["split"] == "dynamic test"}
    assert dyn[MODELS[-1]].get("mask_iou_pooled") is not None  # the full model predicts masks
    assert dyn[MODELS[3]].get("mask_iou_pooled") is None  # stage 1 has no motion head
    assert result["label_rounds"] == 2 and result["steps"] == [1, 1, 1]
    # The runs the rows load: stage 1, stage 2 of round 1, stage 3 of the last round, the posed stage 1.
    expect = ["views2/stage1", "views2/stage2", "views2/stage3_round2", "views2/posed/stage1"]
    assert sorted(set(loaded)) == sorted(expect), loaded
    table = (out / "quality.md").read_text()
    assert all(m in table for m in MODELS)

    loaded.clear()
    before = {p: p.stat().st_mtime_ns for p in (out / "views2").rglob("*.safetensors")}
    assert cli_main([*args[:-len(SMALL)], "--skip-train"]) == 0
    assert sorted(set(loaded)) == sorted(expect)
    assert {p: p.stat().st_mtime_ns for p in (out / "views2").rglob("*.safetensors")} == before  # nothing retrained
    again = json.loads((out / "quality.json").read_text())
    assert again["steps"] is None and again["label_rounds"] is None  # the runs' own configs say how they were made
    psnr = [r["metrics"]["psnr"] for r in result["rows"]]
    assert [r["metrics"]["psnr"] for r in again["rows"]] == pytest.approx(psnr)

    # The same runs named one by one (as models made elsewhere are): the same rows.
    loaded.clear()
    v = out / "views2"
    named = ["--stage1", str(v / "stage1"), "--stage2", str(v / "stage2"), "--stage3", str(v / "stage3_round2"),
             "--posed", str(v / "posed" / "stage1")]
    assert cli_main(["bench", "quality", "--out", str(out / "named"), "--max-scenes", "1", *named]) == 0
    assert sorted(set(loaded)) == sorted(expect)
    named_rows = json.loads((out / "named" / "quality.json").read_text())["rows"]
    assert [r["metrics"]["psnr"] for r in named_rows] == pytest.approx(psnr)


def test_quality_evaluates_named_models_without_training_and_records_them(tmp_path, monkeypatch, capsys):
    """--stage1/2/3 [--posed]: the table of models named one by one (made elsewhere) from one command; each row gets
    the model named for it, nothing is trained, and quality.json says which files made the rows."""
    import benchmarks.quality as quality
    import wildrayzer.commands.schedule as schedule
    import wildrayzer.data.synthetic as synthetic

    seen = {}

    def fake_rows(dirs, views, max_scenes, full_only, posed=None):
        seen.update(dirs=dict(dirs), views=views, posed=posed)
        return []

    monkeypatch.setattr(quality, "evaluate_rows", fake_rows)
    monkeypatch.setattr(synthetic, "ensure_default_data", lambda *a, **k: None)
    monkeypatch.setattr(schedule, "run_schedule", lambda *a, **k: pytest.fail("trained a stage"))
    for name in ("s1", "s2", "s3", "posed"):
        (tmp_path / name).mkdir()
    out = tmp_path / "q"
    named = ["--stage1", str(tmp_path / "s1"), "--stage2", str(tmp_path / "s2"), "--stage3", str(tmp_path / "s3")]
    assert quality.main(["--out", str(out), *named, "--posed", str(tmp_path / "posed")]) == 0
    assert seen["dirs"] == {1: tmp_path / "s1", 2: tmp_path / "s2", 3: tmp_path / "s3"}
    assert seen["posed"] == tmp_path / "posed" and seen["views"] == 2
    result = json.loads((out / "quality.json").read_text())
    assert result["models"]["2"] == {"stage1": str(tmp_path / "s1"), "stage2": str(tmp_path / "s2"),
                                "stage3": str(tmp_path / "s3"), "posed": str(tmp_path / "posed")}
    assert result["steps"] is None  # nothing trained: the models' own configs say how they were made

    for argv, says in ((named[:4], "go together"), ([*named, "--views", "2", "3"], "one --views"),
                       ([*named[:5], str(tmp_path / "missing")], "missing: no such file")):
        with pytest.raises(SystemExit) as e:
            quality.main(["--out", str(tmp_path / "bad"), *argv])
        assert e.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
