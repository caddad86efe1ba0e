"""`wildrayzer schedule`: shared and per-stage overrides reach the right stage configs; bad input is exit 2."""

from pathlib import Path

import pytest

from wildrayzer.cli import main as cli_main
from wildrayzer.commands import schedule

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def captured(monkeypatch):
    """Replace training by a recorder of the configs each stage would train with."""
    import wildrayzer.data.synthetic as synthetic
    import wildrayzer.train.loop as loop

    cfgs = {}

    def fake_train(cfg):
        cfgs[int(cfg.training.stage)] = cfg
        cfgs.setdefault("order", []).append(cfg)
        run = Path(cfg.training.output_dir) / cfg.training.run_name
        return {"run_dir": str(run), "step": cfg.training.max_steps, "checkpoint": str(run / "ckpt")}

    monkeypatch.setattr(loop, "train", fake_train)
    monkeypatch.setattr(synthetic, "ensure_default_data", lambda *a, **k: None)
    monkeypatch.chdir(REPO)
    return cfgs


def test_per_stage_overrides_apply_to_their_stage_only(captured, tmp_path):
    rc = schedule.main(["--out", str(tmp_path), "--steps", "5000", "300", "300", "--train-scenes", "192",
                        "--stage-override", "1", "training.batch_size=8", "--stage-override", "1",
                        "training.lr_warmup=150", "--stage-override", "3", "training.lr=1e-4", "training.seed=7"])
    assert rc == 0 and sorted(k for k in captured if k != "order") == [1, 2, 3]
    s1, s2, s3 = captured[1].training, captured[2].training, captured[3].training
    assert (s1.batch_size, s1.lr_warmup, s1.max_steps) == (8, 150, 5000)
    assert s2.batch_size == 4 and s3.batch_size == 4 and s2.lr_warmup == 50  # the tiny configs' own values
    assert s3.lr == pytest.approx(1e-4) and s2.lr == pytest.approx(2e-3)
    assert s1.seed == s2.seed == s3.seed == 7  # shared overrides reach every stage
    assert captured[1].data.root == "data/synthetic_192/re10k_processed_v2"
    assert s3.init_from == str(tmp_path / "stage2")


@pytest.mark.parametrize("bad", [["--stage-override", "4", "training.lr=1"],
                                 ["--stage-override", "1", "training.no_such_key=1"]])
def test_bad_stage_override_is_exit_2(captured, tmp_path, bad, capsys):
    assert cli_main(["schedule", "--out", str(tmp_path), *bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and ("stage" in err[0] or "no_such_key" in err[0])


def test_label_rounds_repeat_stages_2_and_3_from_the_previous_stage_3_with_masked_labels(captured, tmp_path):
    assert schedule.main(["--out", str(tmp_path), "--label-rounds", "3"]) == 0
    got = [(int(c.training.stage), c.training.run_name, c.training.init_from, c.pseudolabel.mask_context)
           for c in captured["order"]]
    run = {name: str(tmp_path / name) for name in ("stage1", "stage2", "stage3", "stage2_round2", "stage3_round2")}
    assert got == [(1, "stage1", "", False), (2, "stage2", run["stage1"], False), (3, "stage3", run["stage2"], False),
                   (2, "stage2_round2", run["stage3"], True), (3, "stage3_round2", run["stage2_round2"], True),
                   (2, "stage2_round3", run["stage3_round2"], True),
                   (3, "stage3_round3", str(tmp_path / "stage2_round3"), True)]


@pytest.mark.parametrize("bad", [["--label-rounds", "0"], ["--label-rounds", "-1"]])
def test_bad_label_rounds_is_exit_2(captured, tmp_path, bad, capsys):
    assert cli_main(["schedule", "--out", str(tmp_path), *bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--label-rounds" in err[0] and "order" not in captured


def test_a_stage_override_can_target_one_labelling_round(captured, tmp_path):
    """--stage-override S:R reaches stage S of round R only, after the overrides of stage S in every round."""
    assert schedule.main(["--out", str(tmp_path), "--label-rounds", "2", "--stage-override", "2", "training.lr=1e-3",
                          "--stage-override", "2:2", "training.max_steps=900", "--stage-override", "2:2",
                          "training.lr=5e-4"]) == 0
    got = {c.training.run_name: (c.training.max_steps, c.training.lr) for c in captured["order"]}
    assert got["stage2"] == (300, pytest.approx(1e-3)) and got["stage2_round2"] == (900, pytest.approx(5e-4))
    assert got["stage3_round2"][0] == 600


@pytest.mark.parametrize("target", ["2:0", "1:2", "2:x", "4:1", "2:3"])
def test_a_bad_round_target_is_exit_2(captured, tmp_path, target, capsys):
    assert cli_main(["schedule", "--out", str(tmp_path), "--label-rounds", "2", "--stage-override", target,
                     "training.lr=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--stage-override" in err[0] and "order" not in captured


def test_stage1_from_skips_stage_1_and_starts_the_first_stage_2_from_it(captured, tmp_path):
    source = tmp_path / "joint"
    source.mkdir()
    assert schedule.main(["--out", str(tmp_path), "--label-rounds", "2", "--stage1-from", str(source)]) == 0
    got = [(c.training.run_name, c.training.init_from) for c in captured["order"]]
    assert got == [("stage2", str(source)), ("stage3", str(tmp_path / "stage2")),
                   ("stage2_round2", str(tmp_path / "stage3")), ("stage3_round2", str(tmp_path / "stage2_round2"))]


@pytest.mark.parametrize("bad, words", [(["--stage1-from", "no/such/run"], "not found: no/such/run"),
                                        (["--stage1-from", ".", "--stage-override", "1", "training.lr=1"],
                                         "would not apply")])
def test_bad_stage1_from_is_exit_2_before_anything_trains(captured, tmp_path, bad, words, capsys):
    assert cli_main(["schedule", "--out", str(tmp_path), *bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--stage1-from" in err[0] and words in err[0] and "order" not in captured
