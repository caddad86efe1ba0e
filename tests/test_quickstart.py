"""``wildrayzer quickstart``: the product's end-to-end path (data check, inference, table, report) on a small
generated dataset and a random tiny checkpoint instead of the embedded set and the shipped model."""

import pytest
from test_api import TINY, make_tiny_checkpoint
from test_infer_run import REPO, make_dataset

from wildrayzer.cli import main as cli_main
from wildrayzer.commands import quickstart
from wildrayzer.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_quickstart_writes_report_metrics_and_prints_the_table(tmp_path, monkeypatch, capsys):
    import wildrayzer.data.synthetic as synthetic

    data = make_dataset(tmp_path / "data")
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", REPO)
    calls = []
    monkeypatch.setattr(synthetic, "ensure_default_data", lambda root, *a, **k: calls.append(root))
    monkeypatch.chdir(REPO)
    out = tmp_path / "eval"
    rc = cli_main(["quickstart", *TINY, f"data.root={data}", f"inference.model_path={ckpt}",
                   f"inference_out_root={out}", "inference.device=cpu", "inference.max_scenes=1"])
    stdout = capsys.readouterr().out
    assert rc == 0
    assert calls == []  # data.root was overridden: the embedded set is neither generated nor overwritten
    assert (out / "index.html").is_file() and (out / "metrics.json").is_file()
    assert "WildRayZer evaluation" in stdout and "PSNR vs clean" in stdout
    assert f"report: {(out / 'index.html').resolve()}" in stdout
    assert "quickstart finished" in stdout and "1 scenes" in stdout


def test_quickstart_generates_the_embedded_set_and_names_the_missing_checkpoint(tmp_path, monkeypatch):
    import wildrayzer.data.synthetic as synthetic

    calls = []
    monkeypatch.setattr(synthetic, "ensure_default_data", lambda root, *a, **k: calls.append(str(root)))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    retrain = "bash tools/posed_to_selfsup.sh OUT_DIR checkpoints/wildrayzer_tiny_2view"
    with pytest.raises(CheckpointError, match=retrain):
        quickstart.main([f"inference_out_root={tmp_path / 'eval'}"])
    assert calls == ["data/synthetic"]  # the config's own data.root: the embedded set is made if absent


def test_quickstart_outside_the_repository_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["quickstart"]) == 2
    assert "run quickstart from the repository root" in capsys.readouterr().err
