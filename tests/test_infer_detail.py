"""wildrayzer.infer.detail / `wildrayzer bench detail`: what limits a renderer, geometry or sub-token detail."""

from pathlib import Path

import pytest
import torch
from tiny_run import MODEL, NO_MOTION, REPO, TRAIN_CFG, run_cli, small_synth, tiny_pretrained

from wildrayzer.config import load_config
from wildrayzer.data import build_dataset
from wildrayzer.errors import UserError
from wildrayzer.infer.detail import KEYS, block_means, detail_scores
from wildrayzer.infer.evaluate import evaluate
from wildrayzer.infer.pipeline import Pipeline
from wildrayzer.model import WildRayZerModel


def test_block_means_is_the_best_one_colour_per_block_image():
    x = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    m = block_means(x, 4)
    assert m.shape == x.shape
    assert torch.equal(m[..., :4, :4], m[..., :1, :1].expand(-1, -1, 4, 4))  # one colour per block
    assert torch.allclose(m[..., :4, 4:8].mean((-2, -1)), x[..., :4, 4:8].mean((-2, -1)))
    err = ((m - x) ** 2).mean()
    for shift in (0.01, -0.03):  # any other colour for a block is worse
        other = m.clone()
        other[..., 4:, 8:] += shift
        assert ((other - x) ** 2).mean() > err
    assert torch.equal(block_means(x, 1), x)
    with pytest.raises(ValueError, match="must divide"):
        block_means(x, 5)


@pytest.fixture(scope="module")
def posed(tmp_path_factory):
    root = small_synth(tmp_path_factory.mktemp("detail"))
    cfg = load_config(TRAIN_CFG, MODEL + NO_MOTION + ["model.cameras=given", "data.split=test",
                                                      f"data.root={root / 're10k_processed_v2'}"])
    torch.manual_seed(0)
    pipe = Pipeline(WildRayZerModel(cfg.model).eval(), None, cfg, torch.device("cpu"), Path("in-memory"))
    return pipe, build_dataset(cfg, "eval"), root


def test_detail_scores_agree_with_evaluate_and_order_as_they_must(posed):
    pipe, ds, _ = posed
    s = detail_scores(pipe, ds, progress=False)
    m = s["mean"]
    assert s["num_scenes"] == 1 and set(m) == set(KEYS) and all(v is not None for v in m.values())
    assert m["target"] == pytest.approx(evaluate(ds, 2, pipe=pipe, progress=False)["mean"]["psnr"], abs=1e-4)
    assert m["copy_nearest"] == pytest.approx(evaluate(ds, 2, baseline="copy_nearest", progress=False)["mean"]["psnr"],
                                              abs=1e-4)
    # averaging over blocks cannot raise the squared error; finer blocks keep more of the image
    assert m["target_coarse"] >= m["target"] and m["half_patch_means"] > m["patch_means"]
    assert m["context"] != m["target"]  # the context views are rendered, not the targets again


def test_an_empty_dataset_is_a_user_error(posed):
    with pytest.raises(UserError, match="no scenes"):
        detail_scores(posed[0], [], progress=False)


def test_bench_detail_writes_its_table(posed, tmp_path, monkeypatch):
    ckpt = tiny_pretrained(tmp_path / "model")
    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    rc, stdout, _ = run_cli(["bench", "detail", str(ckpt), "--out", str(out), *MODEL,
                             f"data.root={posed[2] / 're10k_processed_v2'}"])
    assert rc == 0
    assert torch.is_grad_enabled()  # the script ran in this process and left autograd as it found it
    md = (out / "detail.md").read_text()
    assert md.startswith("| model | scenes | novel views (dB) | context re-rendered (dB) |") and str(ckpt) in md
    assert md in stdout
