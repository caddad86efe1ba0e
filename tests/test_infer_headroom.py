"""The masking-headroom analysis (``wildrayzer bench headroom``): each condition changes what it claims to change."""

from pathlib import Path

import pytest
import torch
from tiny_run import INFER_CFG, MODEL, NO_MOTION, REPO, run_cli, small_synth, tiny_pretrained

from wildrayzer.config import load_config
from wildrayzer.data import build_dataset
from wildrayzer.errors import UserError
from wildrayzer.infer.headroom import masking_headroom, paired_difference
from wildrayzer.infer.pipeline import Pipeline
from wildrayzer.model import WildRayZerModel


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return small_synth(tmp_path_factory.mktemp("headroom"), dynamic_test=2)


def _setup(root: Path, sub: str, *extra: str):
    cfg = load_config(INFER_CFG, [f"data.root={root / sub}", *MODEL, *NO_MOTION, "model.use_mae_masking=true",
                                  *extra])
    torch.manual_seed(0)
    model = WildRayZerModel(cfg.model).eval()
    return Pipeline(model, None, cfg, torch.device("cpu"), Path("in-memory")), build_dataset(cfg, "eval")


def _static(summary: dict, condition: str) -> float:
    return summary[condition]["mean"]["psnr_static"]


def test_conditions_change_only_what_they_claim(data_root):
    pipe, ds = _setup(data_root, "dynamic_re10k", "model.mask_token_threshold=0.0")
    masked = masking_headroom(pipe, ds, progress=False)
    assert set(masked) == {"as_given", "gt_masks", "transient_free"}  # no motion estimator -> no own_masks
    assert masked["as_given"]["num_scenes"] == 2
    vals = [_static(masked, c) for c in masked]
    assert all(v == v and 5 < v < 60 for v in vals)  # finite PSNRs
    # any GT-moving pixel in a patch masks it: renders change; transient-free context changes them too (a random
    # model hardly reads its context, by ~1e-6 dB here, but the pipeline is deterministic: any change is a change)
    assert _static(masked, "gt_masks") != _static(masked, "as_given")
    assert _static(masked, "transient_free") != _static(masked, "as_given")
    # a threshold no patch can exceed masks nothing: GT masking is then exactly the unmasked model
    pipe.model.mask_token_threshold = 1.0
    unmasked = masking_headroom(pipe, ds, progress=False)
    assert _static(unmasked, "gt_masks") == _static(unmasked, "as_given") == _static(masked, "as_given")
    assert pipe.model.use_mae_masking is True  # the caller's flag is restored


def test_needs_masks_and_clean_images(data_root):
    pipe, ds = _setup(data_root, "re10k_processed_v2", "data.dataset=lvsm", "data.list_file=full_list.txt",
                      "data.view_idx_file=")
    flag = pipe.model.use_mae_masking
    with pytest.raises(UserError, match="clean_images"):
        masking_headroom(pipe, ds, progress=False)
    assert pipe.model.use_mae_masking == flag


def test_mixed_masks_run_from_own_to_ground_truth(data_root):
    # The untrained head predicts ~0.02 everywhere: a threshold of 0.015 makes its own masks mask some patches.
    pipe, ds = _setup(data_root, "dynamic_re10k", "model.use_motion_mask=true", "model.mask_token_threshold=0.015")
    out = masking_headroom(pipe, ds, progress=False, mix=(0.0, 1.0, 1.0))
    assert list(out) == ["as_given", "own_masks", "gt_masks", "transient_free", "mix_0", "mix_1"]
    assert _static(out, "own_masks") != _static(out, "as_given")
    # the end points are the model's own masks (as inference masks with them) and the ground truth, exactly
    assert _static(out, "mix_0") == _static(out, "own_masks")
    assert _static(out, "mix_1") == _static(out, "gt_masks")
    assert out["mix_0"]["mean"]["mask_iou_pooled"] == out["own_masks"]["mean"]["mask_iou_pooled"]
    assert out["mix_1"]["mean"]["mask_iou_pooled"] == 1.0
    assert "mask_iou_pooled" not in out["gt_masks"]["mean"]  # scores only for masks a model predicted
    # in between: at 0.1, a patch is masked where 0.5 * GT + 0.5 * own covers a tenth of it, neither end's masks
    pipe.model.mask_token_threshold = 0.1
    mid = masking_headroom(pipe, ds, progress=False, mix=(0.0, 0.5, 1.0))
    assert _static(mid, "mix_0") != _static(mid, "mix_0.5") != _static(mid, "mix_1")


@pytest.mark.parametrize("extra, mix, match", [((), (0.5,), "motion estimator"),
                                               (("model.use_motion_mask=true",), (1.5,), r"\[0, 1\]; got 1.5")])
def test_bad_mix_is_a_user_error(data_root, extra, mix, match):
    pipe, ds = _setup(data_root, "dynamic_re10k", *extra)
    with pytest.raises(UserError, match=match):
        masking_headroom(pipe, ds, progress=False, mix=mix)


def test_paired_difference_is_the_mean_and_standard_error_of_per_scene_differences():
    """Scene-to-scene spread that both conditions share does not enter the standard error; missing scenes or
    conditions are skipped, not counted as zero."""
    def cond(values):
        return {"scenes": {f"s{i}": {"psnr_static": v} for i, v in enumerate(values) if v is not None}}

    summary = {"as_given": cond([10.0, 20.0, 30.0, 40.0]), "own_masks": cond([11.0, 20.0, 33.0, None]),
               "gt_masks": cond([10.5, None, None, None])}
    mean, se = paired_difference(summary, "own_masks")
    assert mean == pytest.approx(4.0 / 3.0) and se == pytest.approx((7.0 / 3.0 / 3.0) ** 0.5)  # diffs 1, 0, 3
    assert paired_difference(summary, "gt_masks") is None  # one common scene: no spread to estimate
    assert paired_difference(summary, "transient_free") is None


def test_pipeline_run_uses_the_semantic_features_it_is_given(data_root):
    """headroom computes the context's features once and hands them to Pipeline.run: the same prediction as when
    run computes them itself, and they really are the ones used."""
    from wildrayzer.semantic import build_semantic_backbone

    cfg = load_config(INFER_CFG, [f"data.root={data_root / 'dynamic_re10k'}", *MODEL, "model.use_motion_mask=true"])
    semantic = build_semantic_backbone(cfg.semantic).eval()
    torch.manual_seed(0)
    model = WildRayZerModel(cfg.model, semantic_dim=semantic.out_dim).eval()
    pipe = Pipeline(model, semantic, cfg, torch.device("cpu"), Path("in-memory"))
    images = build_dataset(cfg, "eval")[0]["images"][None]
    sem = pipe.semantic_features(images[:, :pipe.num_context])
    plain, shared = pipe.run(images), pipe.run(images, semantic_feats=sem)
    for key in ("motion_probs", "renders"):
        assert torch.equal(plain[key], shared[key])
    other = pipe.run(images, semantic_feats=torch.zeros_like(sem))
    assert not torch.equal(other["motion_probs"], plain["motion_probs"])


def test_bench_headroom_refuses_a_model_override_the_saved_model_does_not_have(data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    ckpt = tiny_pretrained(tmp_path / "model")
    args = ["bench", "headroom", str(ckpt), "--out", str(tmp_path / "out"), *MODEL,
            f"data.root={data_root / 'dynamic_re10k'}"]
    rc, _, err = run_cli([*args, "model.num_latents=8"])
    assert rc == 2 and "has model.num_latents=16" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert run_cli([*args, "model.num_latents=16", "--max-scenes", "1"])[0] == 0  # the saved value is fine
