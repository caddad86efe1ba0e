"""Run logging never ends a run: wandb without a key or package is one line, TensorBoard still writes."""

from wildrayzer.config import load_config
from wildrayzer.train.logging import RunLogger


def test_wandb_without_key_is_a_note_not_a_crash(tmp_path, capsys):
    cfg = load_config(None, ["logging.wandb=online", f"logging.api_keys_path={tmp_path / 'absent.yaml'}",
                             "logging.progress=false"])
    logger = RunLogger(cfg, tmp_path, is_main=True, start_step=0, total_steps=10)
    assert logger.wandb is None and logger.tb is not None
    logger.log(1, {"train/loss": 0.5})
    logger.close()
    assert "wandb: no 'wandb' key" in capsys.readouterr().err
    assert list((tmp_path / "tensorboard").iterdir())


def test_non_main_ranks_log_nothing(tmp_path):
    cfg = load_config(None, ["logging.progress=true"])
    logger = RunLogger(cfg, tmp_path / "r1", is_main=False, start_step=0, total_steps=10)
    logger.note("hidden")
    logger.log(1, {"x": 1.0})
    logger.advance(1, {"loss": 1.0})
    logger.close()
    assert logger.bar is None and logger.tb is None and not (tmp_path / "r1").exists()


def test_without_a_progress_bar_each_log_is_one_plain_line(tmp_path, capsys):
    cfg = load_config(None, ["logging.progress=false", "logging.tensorboard=false"])
    logger = RunLogger(cfg, tmp_path, is_main=True, start_step=0, total_steps=50)
    logger.log(10, {"train/loss": 0.25, "train/psnr": 21.5, "train/lr": 1e-3, "train/it_per_s": 2.0,
                    "train/grad_norm": 3.0})
    logger.close()
    assert capsys.readouterr().err.strip() == "step 10/50 loss 0.25 psnr 21.5 lr 0.001 it/s 2"
