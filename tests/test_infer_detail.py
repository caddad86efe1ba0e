"""wildrayzer.infer.detail / `wildrayzer bench detail`: what limits a renderer, geometry or sub-token detail."""

import pytest
import torch
from tiny_run import MODEL, REPO, bench_on_static_test, posed_static_test, run_cli, tiny_pretrained

from wildrayzer.errors import UserError
from wildrayzer.infer.detail import KEYS, block_means, detail_scores, scene_detail_scores
from wildrayzer.infer.evaluate import evaluate


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
    return posed_static_test(tmp_path_factory.mktemp("detail"))


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


def test_a_scene_without_targets_and_images_of_the_wrong_size_are_user_errors(posed):
    pipe, ds, _ = posed
    item = ds[0]
    with pytest.raises(UserError, match="no target views"):
        scene_detail_scores(pipe, {**item, "images": item["images"][:2]})
    with pytest.raises(UserError, match="must be 32x32"):
        scene_detail_scores(pipe, {**item, "images": torch.zeros(8, 3, 16, 16)})


def test_bench_detail_writes_its_table(posed, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    md, _ = bench_on_static_test("detail", posed[2], tmp_path)
    assert md.startswith("| model | scenes | novel views (dB) | context re-rendered (dB) |")


@pytest.mark.parametrize("bench", ["detail", "poses"])
def test_a_model_override_the_saved_model_does_not_have_is_refused(posed, tmp_path, monkeypatch, bench):
    """These benchmarks evaluate each model as saved; an override of a model setting (here the latents) would be
    silently ignored: one line and exit code 2 before any scene is evaluated (`bench headroom`: its own test)."""
    monkeypatch.chdir(REPO)
    ckpt = tiny_pretrained(tmp_path / "model")
    data = f"data.root={posed[2] / 're10k_processed_v2'}"
    rc, _, err = run_cli(["bench", bench, str(ckpt), "--out", str(tmp_path / "out"), *MODEL, data,
                          "model.num_latents=8"])
    assert rc == 2 and "model.num_latents=8" in err and "has model.num_latents=16" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
