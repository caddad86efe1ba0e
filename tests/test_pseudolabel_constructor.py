"""The pseudo-mask constructor against synthetic scenes with known motion masks.

Scenes (``tests/pseudolabel_synth.py``): natural photos as static scenes, renders slightly blurred and tinted
like a static model's, a moving textured blob pasted on the photos. Measured on seeds 0-5 at 128x128, 6 frames,
EfficientNet-Lite0 features (IoU per scene; "static": mask fraction on the same scenes without the object):
- score_threshold 1.0 (config default): 0.82 0.93 0.39 0.97 0.96 0.95, mean 0.84; static 5.5 % (by seed: 4.3 15.3
  0.2 0.5 1.6 10.8 %), about what the moving scenes' objects cover (5 %);
- score_threshold 1.5 (RECOMMENDED): 0.95 0.99 0.27 1.00 0.97 0.99, mean 0.86; static 1.5 % (0.1 5.9 0.0 0.0 0.1
  2.7 %); without GrabCut 0.69;
- score_threshold 2.0: mean 0.83, static 0.03 %.
Seed 2 is a dark object on a dark sky, hard for both cues. Matching the photo's blur to the render before SSIM
(``match_render_blur``) cut the static false positives at 1.5 from 3.5 % to 1.5 % at equal IoU. On 8 embedded
synthetic Dynamic-RE10K test scenes with perfect (clean) renders, thresholds 1.0 / 1.5 / 2.0 give 0.96 / 0.90 /
0.62, so 1.5 is the compromise.
"""

import statistics

import pytest
import torch
from pseudolabel_synth import make_scene, mask_iou

from wildrayzer.config import load_config
from wildrayzer.errors import ConfigError
from wildrayzer.pseudolabel.constructor import (
    build_pseudo_masks,
    gaussian_blur,
    match_render_blur,
    pseudo_masks_for_batch,
    zscore,
)
from wildrayzer.semantic import build_semantic_backbone

SEEDS = range(6)
RECOMMENDED = ("pseudolabel.score_threshold=1.5",)



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def backbone():
    return build_semantic_backbone(load_config(None, []).semantic)


@pytest.fixture(scope="module")
def scenes(backbone):
    out = {}
    for seed in SEEDS:
        for moving in (True, False):
            s = make_scene(128, 6, seed, moving_object=moving)
            s["photo_feats"], s["render_feats"] = backbone(s["photos"]), backbone(s["renders"])
            out[seed, moving] = s
    return out


def _run(s, *overrides, seed=0):
    return build_pseudo_masks(s["photos"], s["renders"], s["photo_feats"], s["render_feats"],
                              load_config(None, list(overrides)), seed=seed)


@pytest.fixture(scope="module")
def runs(scenes):
    """Constructor outputs, computed once: (config name, seed, moving) -> PseudoMasks."""
    cache = {}

    def get(name, seed, moving):
        if (name, seed, moving) not in cache:
            overrides = {"default": (), "recommended": RECOMMENDED,
                         "no_grabcut": RECOMMENDED + ("pseudolabel.grabcut=false",)}[name]
            cache[name, seed, moving] = _run(scenes[seed, moving], *overrides)
        return cache[name, seed, moving]

    return get


def _iou(runs, scenes, name, seeds=SEEDS):
    return [mask_iou(runs(name, seed, True).masks, scenes[seed, True]["masks"]) for seed in seeds]


def test_zscore():
    x = torch.randn(3, 1, 8, 8) * 5 + 2
    z = zscore(x)
    torch.testing.assert_close(z.flatten(1).mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.flatten(1).std(1), torch.ones(3), atol=1e-4, rtol=0)


def test_match_render_blur_picks_the_render_sharpness(scenes):
    photos = scenes[0, False]["photos"][:3]
    renders = torch.stack([photos[0], gaussian_blur(photos[1:2], 1.0)[0], gaussian_blur(photos[2:3], 2.0)[0]])
    matched = match_render_blur(photos, renders)
    torch.testing.assert_close(matched, renders)  # frame 0 stays sharp, frames 1 and 2 get sigma 1 and 2
    assert torch.equal(match_render_blur(photos, renders, sigmas=()), photos)


def test_iou_against_ground_truth(runs, scenes):
    default = _iou(runs, scenes, "default")
    assert statistics.mean(default) >= 0.65, default
    recommended = _iou(runs, scenes, "recommended")
    assert statistics.mean(recommended) >= 0.8, recommended
    assert sorted(recommended)[1] >= 0.9, recommended  # all but the one hard scene are nearly exact


def test_grabcut_snaps_to_the_object(runs, scenes):
    seeds = (0, 1, 3, 4)  # not the hard scene 2, where the coarse mask is mostly wrong and GrabCut cannot help
    with_gc, without = _iou(runs, scenes, "recommended", seeds), _iou(runs, scenes, "no_grabcut", seeds)
    assert all(a > b + 0.05 for a, b in zip(with_gc, without)), (with_gc, without)


def test_static_scenes_get_small_masks(runs):
    static = [runs("recommended", seed, False).masks.mean().item() for seed in SEEDS]
    moving = [runs("recommended", seed, True).masks.mean().item() for seed in SEEDS]
    # Most static scenes stay (nearly) empty; finely textured ones (seed 1: a striped flag; 5) keep a little.
    assert sum(f < 0.01 for f in static) >= 4, static
    assert statistics.mean(static) < 0.025, static
    assert sum(m > 2 * f for m, f in zip(moving, static)) >= 4, (moving, static)


def test_cosegmentation_finds_the_moving_object(runs, scenes):
    """Dynamic clusters lie on the object (precision) and cover much of it; static scenes get far fewer."""
    for seed in (0, 1, 3, 4, 5):
        co, gt = runs("recommended", seed, True).cosegment, scenes[seed, True]["masks"] > 0
        assert (co & gt).sum() >= 0.8 * co.sum(), seed
        assert (co & gt).sum() >= 0.4 * gt.sum(), seed
    # Static scenes: no dynamic cluster in 3 of 6; the finely textured ones (seeds 1, 5) have clusters the blurred
    # render mismatches in every frame, which the vote cannot tell from a moving object (measured: 1.2 10 0 0 0 4.5 %).
    static = [runs("recommended", seed, False).cosegment.float().mean().item() for seed in SEEDS]
    assert sum(f == 0 for f in static) >= 3, static
    assert sum(f < 0.02 for f in static) >= 4, static


def test_outputs_and_reliability(scenes):
    s = dict(scenes[0, True])
    renders = s["renders"].clone()
    renders[2] = 1.0 - renders[2]  # a failed render: wrong everywhere
    s["renders"] = renders
    out = _run(s)
    assert out.masks.shape == (6, 1, 128, 128) and out.masks.dtype == torch.float32
    assert set(out.masks.unique().tolist()) <= {0.0, 1.0}
    assert out.scores.shape == (6, 1, 128, 128)
    assert out.psnr[2] < 17.0 and (out.psnr[[0, 1, 3, 4, 5]] > 17.0).all()
    assert out.reliable.tolist() == [True, True, False, True, True, True]
    # The filter threshold comes from training.psnr_filter_threshold.
    assert not _run(s, "training.psnr_filter_threshold=60").reliable.any()


def test_deterministic(scenes, runs):
    a, b = runs("default", 1, True), _run(scenes[1, True])
    assert torch.equal(a.masks, b.masks) and torch.equal(a.dynamic_clusters, b.dynamic_clusters)


def test_semantic_none_is_rejected(scenes):
    s = scenes[0, True]
    with pytest.raises(ConfigError, match="semantic.backbone"):
        build_pseudo_masks(s["photos"], s["renders"], s["photos"][:, :0], s["renders"][:, :0], load_config(None, []))


def test_batch_function_matches_per_scene(scenes, backbone):
    cfg = load_config(None, [])
    a, b = scenes[3, True], scenes[4, False]
    renders = torch.stack([a["renders"][:4], b["renders"][:4]])
    targets = torch.stack([a["photos"][:4], b["photos"][:4]])
    masks, reliable = pseudo_masks_for_batch(renders, targets, backbone, cfg)  # threads: one scene each
    assert masks.shape == (2, 4, 1, 128, 128) and reliable.shape == (2, 4) and reliable.dtype == torch.bool
    serial = pseudo_masks_for_batch(renders, targets, backbone, load_config(None, ["pseudolabel.workers=1"]))
    assert torch.equal(serial[0], masks) and torch.equal(serial[1], reliable)
    for i, s in enumerate((a, b)):
        ref = build_pseudo_masks(s["photos"][:4], s["renders"][:4], s["photo_feats"][:4], s["render_feats"][:4], cfg)
        assert torch.equal(masks[i], ref.masks)
        assert torch.equal(reliable[i], ref.reliable)


def test_ssim_alone_skips_the_render_features_and_scores_the_same(scenes, backbone):
    """With pseudolabel.semantic_weight 0 (the tiny configs) the renders never go through the backbone, and the masks
    are those of the full constructor given real render features; a nonzero weight without them is an error."""
    cfg = load_config(None, ["pseudolabel.semantic_weight=0.0", "pseudolabel.ssim_weight=1.0", "pseudolabel.workers=1"])
    a, b = scenes[3, True], scenes[4, False]
    renders = torch.stack([a["renders"][:4], b["renders"][:4]])
    targets = torch.stack([a["photos"][:4], b["photos"][:4]])
    seen = []

    def counting(x):
        seen.append(x.shape[0])
        return backbone(x)

    masks, reliable = pseudo_masks_for_batch(renders, targets, counting, cfg)
    assert seen == [8]  # the 2 x 4 targets, no render
    feats = torch.stack([a["photo_feats"][:4], b["photo_feats"][:4]])
    seen.clear()
    assert torch.equal(pseudo_masks_for_batch(renders, targets, counting, cfg, target_feats=feats)[0], masks)
    assert seen == []
    for i, s in enumerate((a, b)):
        ref = build_pseudo_masks(s["photos"][:4], s["renders"][:4], s["photo_feats"][:4], s["render_feats"][:4], cfg)
        assert torch.equal(masks[i], ref.masks) and torch.equal(reliable[i], ref.reliable)
        assert torch.equal(build_pseudo_masks(s["photos"][:4], s["renders"][:4], s["photo_feats"][:4], None,
                                              cfg).scores, ref.scores)
    with pytest.raises(ValueError, match="needs the renders' features"):
        build_pseudo_masks(a["photos"][:4], a["renders"][:4], a["photo_feats"][:4], None, load_config(None, []))
