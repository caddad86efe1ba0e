"""Method decisions, pseudo-motion masks and copy-paste (docs/METHOD_DECISIONS.md): the PSNR reliability filter,
dissimilarity scores (1 - cosine, per-frame z-scores, their weights, blur matching), candidates above the score
threshold, growth into touched clusters, open-then-close, GrabCut confined to a band, the co-segmentation vote, and
exact paste masks of instances that move between views. Each test fails when the decision it names is flipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pseudolabel_synth import make_scene, mask_iou

import wildrayzer.pseudolabel.constructor
from wildrayzer.config import load_config
from wildrayzer.data.coco_synth import write_synthetic_coco
from wildrayzer.data.copy_paste import CopyPaste
from wildrayzer.pseudolabel.constructor import (
    build_pseudo_masks,
    dissimilarity_scores,
    gaussian_blur,
    grabcut_refine,
    grow_into_clusters,
    match_render_blur,
    morphology,
    zscore,
)
from wildrayzer.pseudolabel.cosegment import dynamic_clusters
from wildrayzer.train.losses import mask_bce_loss
from wildrayzer.train.stages import get_stage

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["pseudolabel.grabcut=false", "pseudolabel.kmeans_k=8", "pseudolabel.workers=1"]


def feats(x: torch.Tensor, grid: int = 8) -> torch.Tensor:
    """A cheap stand-in for semantic features: unit-norm colour + brightness on a grid. (N, 3, H, W) -> (N, 4, g, g)."""
    f = F.adaptive_avg_pool2d(x.float(), grid)
    return F.normalize(torch.cat([f, f.mean(1, keepdim=True) - 0.5], dim=1), dim=1)


class StubSemantic(torch.nn.Module):
    out_dim = 4

    def forward(self, x):
        return feats(x, 4)


# ------------------------------------------------------------------ reliability (PSNR filter)


def _photos_and_renders():
    gen = torch.Generator().manual_seed(0)
    photos = gaussian_blur(torch.rand(2, 3, 32, 32, generator=gen), 2.0)
    renders = torch.stack([(photos[0] + 0.01 * torch.randn(3, 32, 32, generator=gen)).clamp(0, 1),
                           torch.rand(3, 32, 32, generator=gen)])  # a render unrelated to its photo
    return photos, renders


def test_psnr_filter_marks_poor_static_renders_unreliable():
    photos, renders = _photos_and_renders()
    pm = build_pseudo_masks(photos, renders, feats(photos), feats(renders), load_config(None, FAST))
    assert pm.psnr[0] > 30 and pm.psnr[1] < 17
    assert pm.reliable.tolist() == [True, False]
    loose = load_config(None, FAST + [f"training.psnr_filter_threshold={float(pm.psnr[1]) - 1}"])
    assert build_pseudo_masks(photos, renders, feats(photos), feats(renders), loose).reliable.all()


def test_a_target_whose_static_render_fails_the_psnr_filter_contributes_no_bce():
    photos, renders = _photos_and_renders()
    cfg = load_config(None, FAST + ["model.num_context_views=1", "model.num_target_views=2",
                                    "model.use_dinov3_pseudolabel=true", "copy_paste.enabled=false"])
    st = get_stage(2)
    st.semantic = StubSemantic()
    images = torch.cat([photos[:1], photos])[None]  # 1 context + 2 targets
    labels, valid = st.labels(renders[None], {"images": images}, cfg)
    assert valid.tolist() == [[False, True, False]]
    logits = torch.zeros(1, 3, 1, 32, 32, requires_grad=True)
    loss, _ = mask_bce_loss(logits, labels, valid)
    loss.backward()
    assert logits.grad[0, 2].abs().sum() == 0 and logits.grad[0, 1].abs().sum() > 0


# ------------------------------------------------------------------ scores


def test_scores_are_weighted_per_frame_zscores_of_one_minus_cosine_and_one_minus_ssim():
    gen = torch.Generator().manual_seed(1)
    photos = gaussian_blur(torch.rand(2, 3, 32, 32, generator=gen), 1.0)
    renders = photos.clone()
    renders[:, :, 8:16, 8:16] = 1 - renders[:, :, 8:16, 8:16]  # the pixels differ in one square
    f = feats(photos)
    g = f.clone()
    g[:, :, 5:7, 5:7] = -g[:, :, 5:7, 5:7]  # the features differ in another place (pixels 20..28)
    only_sem = load_config(None, ["pseudolabel.semantic_weight=1.0", "pseudolabel.ssim_weight=0.0"]).pseudolabel
    s = dissimilarity_scores(photos, renders, f, g, only_sem)
    assert s[:, 0, 22:26, 22:26].min() > s[:, 0, 10:14, 10:14].max()  # where the features disagree, not the pixels
    flat = F.normalize(torch.ones_like(f), dim=1)
    same = dissimilarity_scores(photos, renders, flat, flat, only_sem)
    assert same.abs().max() < 1e-4, "with identical features and no SSIM weight nothing may score"
    only_ssim = load_config(None, ["pseudolabel.semantic_weight=0.0", "pseudolabel.ssim_weight=1.0"]).pseudolabel
    s = dissimilarity_scores(photos, renders, f, g, only_ssim)
    assert s[:, 0, 10:14, 10:14].min() > s[:, 0, 22:26, 22:26].max()


def test_zscores_are_per_frame():
    """A frame whose render is poor everywhere is not 'all moving': each frame is normalised on its own."""
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    z = zscore(torch.cat([x, 3 * x + 5]))
    torch.testing.assert_close(z[0], z[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(z[0].mean(), torch.tensor(0.0), atol=1e-5, rtol=0)


def test_photos_are_blurred_to_the_render_sharpness():
    gen = torch.Generator().manual_seed(3)
    photos = torch.rand(2, 3, 32, 32, generator=gen)
    renders = gaussian_blur(photos, 1.5)
    matched = match_render_blur(photos, renders)
    err = ((matched - renders) ** 2).mean()
    assert err < 0.1 * ((photos - renders) ** 2).mean()
    torch.testing.assert_close(match_render_blur(renders, renders), renders)  # already as sharp: kept


# ------------------------------------------------------------------ masks


@pytest.mark.parametrize("seed", [0, 3])
def test_candidates_are_the_high_scores_and_cover_the_moving_object(seed):
    s = make_scene(64, 4, seed)
    pm = build_pseudo_masks(s["photos"], s["renders"], feats(s["photos"]), feats(s["renders"]),
                            load_config(None, FAST))
    assert mask_iou(pm.masks, s["masks"]) > 0.6
    assert pm.masks.mean() < 2 * s["masks"].mean()


def test_final_masks_grow_candidates_into_the_dynamic_clusters_they_touch(monkeypatch):
    """mask = open/close(candidates U the co-segmented regions they touch): an object whose interior matches its
    render poorly is completed by its cluster; a dynamic cluster's region no candidate touches is left out."""
    t, h = 2, 32
    scores = torch.zeros(t, 1, h, h)
    scores[:, :, 10:14, 10:14] = 3.0  # candidates: a small part of the object
    coseg = torch.zeros(t, 1, h, h, dtype=torch.bool)
    coseg[:, :, 6:20, 6:20] = True  # the object's cluster region
    coseg[:, :, 24:30, 24:30] = True  # the same cluster elsewhere, no candidate there
    monkeypatch.setattr(wildrayzer.pseudolabel.constructor, "dissimilarity_scores", lambda *a, **k: scores)
    monkeypatch.setattr(wildrayzer.pseudolabel.constructor, "cosegment", lambda *a, **k: (coseg, torch.tensor([0])))
    x = torch.rand(t, 3, h, h, generator=torch.Generator().manual_seed(4))
    pm = build_pseudo_masks(x, x, feats(x), feats(x), load_config(None, FAST + ["pseudolabel.morph_kernel=3"]))
    assert pm.masks[:, :, 7:19, 7:19].all() and pm.masks[:, :, 24:30, 24:30].sum() == 0


def test_morphology_opens_then_closes():
    """Speckle is removed before gaps are closed (close-then-open would merge it into a blob); holes are filled."""
    speckle = np.zeros((40, 40), np.uint8)
    speckle[4:20:2, 4:20:2] = 1
    assert morphology(speckle, 5).sum() == 0
    blob = np.zeros((40, 40), np.uint8)
    blob[20:34, 20:34] = 1
    blob[27, 27] = 0
    out = morphology(blob, 5)
    assert out[27, 27] == 1 and out[22:32, 22:32].all() and out[:15, :15].sum() == 0


def test_only_cluster_regions_touched_by_a_candidate_grow():
    clusters = np.zeros((20, 20), np.uint8)
    clusters[2:8, 2:8] = 1
    clusters[12:18, 12:18] = 1
    seeds = np.zeros((20, 20), np.uint8)
    seeds[4, 4] = 1
    out = grow_into_clusters(clusters, seeds)
    assert out[2:8, 2:8].all() and out[12:18, 12:18].sum() == 0


def test_grabcut_only_moves_the_mask_within_its_band():
    """Sure background beyond the band: a look-alike object away from the mask is never added."""
    rng = np.random.default_rng(0)
    photo = np.zeros((64, 64, 3), np.uint8)
    photo[...] = (30, 120, 40)
    for y, x in ((5, 5), (40, 40), (5, 40)):
        photo[y:y + 15, x:x + 15] = (220, 30, 30)
    photo = np.clip(photo + rng.integers(-10, 10, photo.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[5:20, 5:20] = 1
    mask[40:55, 40:55] = 1
    out = grabcut_refine(photo, mask, band=3, iters=3)
    assert out[5:20, 40:55].sum() == 0 and out[8:17, 8:17].all()


def test_cosegmentation_vote_needs_a_top_rank_and_enough_frames():
    t, score = 6, torch.zeros(6, 4)
    counts = torch.full((t, 4), 100.0)
    score[:, 0] = 3.0  # flagged everywhere, top ranked -> dynamic
    counts[1:, 1] = 0
    score[0, 1] = 5.0  # the top score, but present (flagged) in a single frame
    score[:, 2] = 2.0  # flagged everywhere, but not in the top half
    dyn, flagged = dynamic_clusters(counts, score * counts, top_fraction=0.5, score_threshold=1.5, min_votes=4)
    assert dyn.tolist() == [True, False, False, False]
    assert flagged[:, 0].all() and flagged[:, 2].all() and flagged[:, 1].sum() == 1 and not flagged[:, 3].any()


# ------------------------------------------------------------------ copy-paste


def test_paste_mask_is_exactly_the_pasted_object_pixels():
    image = torch.full((3, 16, 16), 0.5)
    rgb = np.full((4, 4, 3), 0.9, np.float32)
    disc = np.ones((4, 4), bool)
    disc[0, 0] = disc[0, 3] = disc[3, 0] = disc[3, 3] = False
    pasted = CopyPaste.paste(image, rgb, disc, height=4, left=2, top=3, flip=False)
    want = torch.zeros(16, 16, dtype=torch.bool)
    want[3:7, 2:6] = torch.from_numpy(disc)
    assert torch.equal(pasted, want)
    assert torch.equal((image != 0.5).any(0), want)
    # a flipped paste flips the object and its mask together
    image = torch.full((3, 16, 16), 0.5)
    corner = np.zeros((4, 4), bool)
    corner[:2, :2] = True  # top-left quarter of the cut-out
    pasted = CopyPaste.paste(image, rgb, corner, height=4, left=8, top=8, flip=True)
    assert pasted[8:10, 10:12].all() and pasted.sum() == 4
    assert torch.equal((image != 0.5).any(0), pasted)


@pytest.fixture(scope="module")
def paster(tmp_path_factory):
    coco = tmp_path_factory.mktemp("coco")
    write_synthetic_coco(coco, num_images=3, seed=4)
    cfg = load_config(None, [f"copy_paste.image_dir={coco / 'images'}", "copy_paste.min_area=100",
                             f"copy_paste.annotation_file={coco / 'annotations/instances_synthetic.json'}"])
    return CopyPaste(cfg.copy_paste, seed=0)


def test_pasted_objects_are_the_same_instances_at_independent_places_in_every_view(paster, monkeypatch):
    """A pasted transient behaves like an object that moved: every view gets the same instances, each view at its
    own random position, scale and flip."""
    used = []
    real = paster.instance
    monkeypatch.setattr(paster, "instance", lambda ann_id: used.append(ann_id) or real(ann_id))
    images = torch.full((3, 3, 48, 48), 0.5)
    moved = 0
    for seed in range(6):
        used.clear()
        out, masks = paster(images, rng=seed, force=True)
        per_view = len(used) // 3
        assert per_view >= 1 and used[:per_view] == used[per_view:2 * per_view] == used[2 * per_view:]
        assert torch.equal((out != images).any(1, keepdim=True).float(), masks)
        moved += not torch.equal(masks[0], masks[1])
    assert moved >= 5
