"""Copy-paste transients: exact masks, determinism, polygon + RLE, real COCO layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from wildrayzer.config import load_config
from wildrayzer.data.coco_synth import write_synthetic_coco
from wildrayzer.data.copy_paste import CopyPaste
from wildrayzer.errors import DataError


@pytest.fixture(scope="module")
def coco(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coco")
    write_synthetic_coco(out, num_images=6, seed=4)
    return out


def make(coco_dir: Path, *extra: str, ann: str = "annotations/instances_synthetic.json", images: str = "images"):
    cfg = load_config(None, [f"copy_paste.image_dir={coco_dir / images}",
                             f"copy_paste.annotation_file={coco_dir / ann}", "copy_paste.min_area=100", *extra])
    return CopyPaste(cfg.copy_paste, seed=0)


def test_paste_mask_is_exactly_the_changed_pixels(coco):
    cp = make(coco, "copy_paste.max_objects=3")
    images = torch.full((2, 4, 3, 48, 64), 0.5)  # (B, V, 3, H, W): 0.5 is not a value a uint8 photo can take
    for seed in range(6):
        out, mask = cp(images, rng=seed, force=True)
        assert out.shape == images.shape and mask.shape == (2, 4, 1, 48, 64)
        changed = (out != images).any(dim=2, keepdim=True)
        assert torch.equal(changed.float(), mask) and mask.sum() > 0
        assert 0 <= out.min() and out.max() <= 1
    assert torch.all(images == 0.5), "the input must not be modified"


def test_seeded_determinism_and_probability(coco):
    cp = make(coco)
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    a, b, c = cp(images, 11, force=True), cp(images, 11, force=True), cp(images, 12, force=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert not torch.equal(a[1][0], a[1][1]), "each view gets its own placement"
    never = make(coco, "copy_paste.probability=0.0")
    out, mask = never(images, 11)
    assert torch.equal(out, images) and mask.sum() == 0
    always = make(coco, "copy_paste.probability=1.0")
    assert always(images, 11)[1].sum() > 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools decode under numpy 2
def test_polygon_and_rle_instances_cut_exactly(coco):
    data = json.loads((coco / "annotations" / "instances_synthetic.json").read_text())
    kinds = {("rle" if isinstance(a["segmentation"], dict) else "polygon"): a for a in data["annotations"]}
    assert set(kinds) == {"rle", "polygon"}
    cp = make(coco)
    for kind, ann in kinds.items():
        rgb, m = cp.instance(ann["id"])
        info = cp.coco.imgs[ann["image_id"]]
        full = cp.coco.annToMask(ann).astype(bool)
        ys, xs = np.nonzero(full)
        assert np.array_equal(m, full[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]), kind
        photo = np.asarray(Image.open(coco / "images" / info["file_name"]).convert("RGB"))
        crop = photo[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        np.testing.assert_array_equal(np.round(rgb * 255).astype(np.uint8)[m], crop[m])
        if kind == "rle":  # RLE decodes to exactly the stored mask
            assert mask_utils.area(cp.coco.annToRLE(ann)) == ann["area"] == m.sum()
        # Pasting at native size, unflipped, reproduces the cut-out pixel for pixel; flipped, the mirror image.
        for flip in (False, True):
            canvas = torch.zeros(3, 200, 200)
            pasted = CopyPaste.paste(canvas, rgb, m, m.shape[0], 5, 7, flip)
            want = m[:, ::-1] if flip else m
            assert torch.equal(pasted[7 : 7 + m.shape[0], 5 : 5 + m.shape[1]], torch.from_numpy(want.copy()))
            assert int(pasted.sum()) == int(m.sum())
            src = rgb[:, ::-1] if flip else rgb
            got = canvas[:, 7 : 7 + m.shape[0], 5 : 5 + m.shape[1]].permute(1, 2, 0).numpy()
            np.testing.assert_allclose(got[want], src[want], atol=1e-6)


def test_real_coco_train2014_layout(tmp_path):
    """instances_train2014.json structure: crowd and small instances ignored, polygon + RLE both used."""
    img_dir = tmp_path / "train2014"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(img_dir / "COCO_train2014_000000000009.jpg")
    blob = np.zeros((60, 80), dtype=np.uint8)
    blob[10:40, 20:45] = 1
    rle = mask_utils.encode(np.asfortranarray(blob))
    anns = [
        {"id": 1, "image_id": 9, "category_id": 1, "iscrowd": 0, "area": 600.0, "bbox": [50, 5, 25, 40],
         "segmentation": [[50, 5, 75, 5, 75, 45, 50, 45]]},
        {"id": 2, "image_id": 9, "category_id": 1, "iscrowd": 0, "area": 750.0, "bbox": [20, 10, 25, 30],
         "segmentation": {"size": [60, 80], "counts": rle["counts"].decode()}},
        {"id": 3, "image_id": 9, "category_id": 1, "iscrowd": 1, "area": 900.0, "bbox": [0, 0, 30, 30],
         "segmentation": {"size": [60, 80], "counts": rle["counts"].decode()}},
        {"id": 4, "image_id": 9, "category_id": 1, "iscrowd": 0, "area": 20.0, "bbox": [0, 0, 4, 5],
         "segmentation": [[0, 0, 4, 0, 4, 5, 0, 5]]},
    ]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2014.json").write_text(json.dumps({
        "info": {}, "licenses": [], "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
        "images": [{"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "height": 60, "width": 80}],
        "annotations": anns}))
    cp = make(tmp_path, ann="annotations/instances_train2014.json", images="train2014")
    assert cp.ann_ids == [1, 2]
    assert cp.instance(2)[1].shape == (30, 25) and cp.instance(2)[1].all()
    assert cp.instance(1)[1].shape[1] in (25, 26)
    out, mask = cp(torch.full((2, 3, 32, 32), 0.5), 0, force=True)
    assert torch.equal((out != 0.5).any(1, keepdim=True).float(), mask)


def test_missing_or_foreign_files_raise(coco, tmp_path):
    with pytest.raises(DataError, match="annotations .* not found"):
        make(coco, ann="annotations/nope.json")
    with pytest.raises(DataError, match="image directory .* not found"):
        make(coco, images="nope")
    (tmp_path / "a.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(DataError, match="no non-crowd instance"):
        make(tmp_path, ann="a.json", images=".")


def test_glide_moves_each_object_along_a_straight_path_through_the_views(coco):
    cp = make(coco, "copy_paste.max_objects=1", "copy_paste.min_scale=0.3", "copy_paste.max_scale=0.3",
              "copy_paste.motion=glide")
    images = torch.full((5, 3, 64, 64), 0.5)
    frames = torch.tensor([3, 5, 7, 9, 11])  # equally spaced: times 0, 0.25, ..., 1 on the paths
    moved = 0
    for seed in range(30):
        _, mask = cp(images, rng=seed, force=True, frame_idx=frames)
        area = mask.sum(dim=(1, 2, 3))
        if (area == 0).any():
            continue
        ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        centre = torch.stack([(mask[:, 0] * xs).sum((1, 2)) / area, (mask[:, 0] * ys).sum((1, 2)) / area], 1)
        if (area < area.max() * 0.9).any():  # clipped at the border: the centroid leaves the line
            continue
        step = centre[1:] - centre[:-1]  # equal times apart: equal steps on the line
        assert torch.allclose(step, step[0].expand_as(step), atol=1.5), (seed, centre)
        moved += int(step[0].norm() > 2)
    assert moved >= 3, "objects glide, they do not stand still"
    # a view's place on the path is its frame number, not its index: the same frames in another order, the same pastes
    order = torch.tensor([3, 0, 4, 1, 2])
    a, ma = cp(images, rng=7, force=True, frame_idx=frames)
    b, mb = cp(images, rng=7, force=True, frame_idx=frames[order])
    assert torch.equal(mb, ma[order]) and torch.equal(b, a[order])
    for bad in (frames[:3], None):
        with pytest.raises(ValueError, match="glide needs one frame_idx per image"):
            cp(images, rng=0, force=True, frame_idx=bad)
