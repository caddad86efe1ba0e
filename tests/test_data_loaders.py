"""LVSM / Dynamic-RE10K loaders: item contract, intrinsics under resize/crop, view sampling, workers, formats."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wildrayzer.config import load_config
from wildrayzer.data import build_dataset
from wildrayzer.data.frames import adjust_intrinsics, read_mask, resize_crop
from wildrayzer.data.scenes import random_scene
from wildrayzer.data.synthetic import SynthParams, generate, render_frame, write_scene
from wildrayzer.errors import DataError
from wildrayzer.image_ops import psnr

PARAMS = SynthParams(static_train=3, static_test=2, dynamic_train=3, dynamic_test=2, frames=12, res=48, seed=1,
                     coco_images=1)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("loaders")
    generate(out, PARAMS, progress=False)
    return out


def make_cfg(root: Path, *extra: str, size: int = 32, ctx: int = 2, tgt: int = 3):
    return load_config(None, [f"data.root={root}", f"model.image_size={size}", "model.patch_size=8",
                              f"model.num_context_views={ctx}", f"model.num_target_views={tgt}",
                              "data.frame_gap_min=4", "data.frame_gap_max=8", *extra])


def test_item_contract_static_and_dynamic(tree):
    static = build_dataset(make_cfg(tree / "re10k_processed_v2"), "train")
    dynamic = build_dataset(make_cfg(tree / "dynamic_re10k", "data.dataset=dynamic"), "train")
    assert len(static) == 3 and len(dynamic) == 3
    s, d = static[1], dynamic[2]
    assert set(s) == {"images", "fxfycxcy", "c2w", "frame_idx", "scene"}
    assert set(d) == set(s) | {"motion_masks", "clean_images"}
    for item in (s, d):
        assert item["images"].shape == (5, 3, 32, 32) and item["images"].dtype == torch.float32
        assert 0.0 <= item["images"].min() and item["images"].max() <= 1.0
        assert item["fxfycxcy"].shape == (5, 4) and item["fxfycxcy"].dtype == torch.float32
        assert item["c2w"].shape == (5, 4, 4) and item["frame_idx"].dtype == torch.int64
        rot = item["c2w"][:, :3, :3]
        torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-5, rtol=0)
    assert d["scene"] == "dynamic_train_0002"
    assert d["motion_masks"].shape == (5, 1, 32, 32) and set(d["motion_masks"].unique().tolist()) <= {0.0, 1.0}
    assert d["clean_images"].shape == (5, 3, 32, 32)
    # Downsampling mixes colour across the mask border, and a transient's thin parts (under half a pixel after
    # resizing) drop out of the binary mask: compare only pixels that no moving pixel touches at full resolution.
    soft = torch.stack([torch.from_numpy(resize_crop(read_mask(
        tree / "dynamic_re10k/train/binary_masks" / d["scene"] / f"{int(f):05d}.png"), 32))[None]
        for f in d["frame_idx"]])  # (5, 1, 32, 32) fraction of moving pixels
    assert torch.equal((soft >= 0.5).float(), d["motion_masks"])
    keep = (torch.nn.functional.max_pool2d(soft, 3, 1, 1) == 0).expand(-1, 3, -1, -1)
    assert (d["images"][keep] - d["clean_images"][keep]).abs().max() < 1e-6
    # Intrinsics follow the resize 48 -> 32 exactly (square frames: no crop).
    meta = json.loads((tree / "re10k_processed_v2/train/metadata/static_train_0001.json").read_text())
    expected = torch.tensor([meta["frames"][int(i)]["fxfycxcy"] for i in s["frame_idx"]]) * (32 / 48)
    torch.testing.assert_close(s["fxfycxcy"], expected.float())
    w2c = torch.tensor([meta["frames"][int(i)]["w2c"] for i in s["frame_idx"]])
    torch.testing.assert_close(s["c2w"], torch.linalg.inv(w2c).float(), atol=1e-5, rtol=0)


def test_resize_and_centre_crop_keep_intrinsics_consistent(tmp_path):
    """A 48x80 scene loaded at 32x32: rendering the loaded camera reproduces the loaded image; ignoring the crop
    offset (a typical bug) does not."""
    split = tmp_path / "wide" / "train"
    (split / "metadata").mkdir(parents=True)
    spec = random_scene(np.random.default_rng(11), 10, 48, 80, dynamic=False)
    write_scene(split, "wide", spec, dynamic=False, extra={})
    (split / "full_list.txt").write_text("metadata/wide.json\n")
    ds = build_dataset(make_cfg(tmp_path / "wide"), "eval")
    item = ds[0]
    spec.height = spec.width = 32
    for v in range(2):
        spec.c2w[item["frame_idx"][v]] = item["c2w"][v].double().numpy()
        good = spec.fxfycxcy = item["fxfycxcy"][v].double().numpy()
        render = torch.from_numpy(render_frame(spec, int(item["frame_idx"][v]))["image"]).permute(2, 0, 1)[None]
        p_good = psnr(render, item["images"][v : v + 1])
        spec.fxfycxcy = good + np.array([0.0, 0.0, 16 * 32 / 48, 0.0])  # crop offset forgotten
        p_bad = psnr(torch.from_numpy(render_frame(spec, int(item["frame_idx"][v]))["image"]).permute(2, 0, 1)[None],
                     item["images"][v : v + 1])
        assert p_good > 24 and p_good > p_bad + 6, (p_good, p_bad)
    # The formula: 48x80 -> 32x53 (x scale 53/80, y scale 32/48), then 10 px cropped off the left.
    out = adjust_intrinsics(torch.tensor([60.0, 60.0, 40.0, 24.0]), 48, 80, 32)
    torch.testing.assert_close(out, torch.tensor([60.0 * 53 / 80, 40.0, 40.0 * 53 / 80 - 10, 16.0]))


def test_train_sampling_is_seeded_and_windowed(tree):
    cfg = make_cfg(tree / "re10k_processed_v2")
    a, b = build_dataset(cfg, "train", seed=7), build_dataset(cfg, "train", seed=7)
    c = build_dataset(cfg, "train", seed=8)
    runs = [[ds[i]["frame_idx"].tolist() for _ in range(4) for i in range(len(ds))] for ds in (a, b, c)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert len({tuple(x) for x in runs[0]}) > 4, "repeated draws of a scene must sample different windows"
    for idx in runs[0]:
        ctx, tgt = idx[:2], idx[2:]
        assert 4 <= ctx[1] - ctx[0] <= 8, idx  # frame_gap_min..max
        assert all(ctx[0] < t < ctx[1] for t in tgt) and len(set(tgt)) == 3
    # A trainer pins the epoch: views become a pure function of (seed, epoch, index), as a resume needs.
    a.set_epoch(1)
    c.seed = 7
    c.set_epoch(1)
    first = [a[i]["frame_idx"].tolist() for i in range(3)]
    assert first == [a[i]["frame_idx"].tolist() for i in range(3)] == [c[i]["frame_idx"].tolist() for i in range(3)]
    a.set_epoch(2)
    assert [a[i]["frame_idx"].tolist() for i in range(3)] != first


def test_shuffled_targets_are_the_same_frames_in_random_order_and_only_in_training(tree):
    """Sorted targets let a target's slot stand for its place in time; shuffled ones are the same frames (same window,
    same draws), not in time order, with every item's images, cameras and frame indices permuted together."""
    sorted_ds = build_dataset(make_cfg(tree / "re10k_processed_v2", tgt=4), "train", seed=3)
    shuffled = build_dataset(make_cfg(tree / "re10k_processed_v2", "data.shuffle_targets=true", tgt=4), "train",
                             seed=3)
    plain = [sorted_ds[i]["frame_idx"].tolist() for _ in range(6) for i in range(len(sorted_ds))]
    items = [shuffled[i] for _ in range(6) for i in range(len(shuffled))]
    mixed = [it["frame_idx"].tolist() for it in items]
    assert all(t == sorted(t) for idx in plain for t in [idx[2:]])
    assert [m[:2] for m in mixed] == [p[:2] for p in plain]  # same windows
    assert [sorted(m[2:]) for m in mixed] == [p[2:] for p in plain]  # same target frames
    assert sum(m[2:] != sorted(m[2:]) for m in mixed) >= len(mixed) // 2  # 4 targets: sorted 1 time in 24
    # the item's views follow its frame order: the same frame gives the same image and camera in both datasets
    it = items[0]
    by_frame = {f: k for k, f in enumerate(plain[0])}
    first_sorted = build_dataset(make_cfg(tree / "re10k_processed_v2", tgt=4), "train", seed=3)[0]
    for k, f in enumerate(it["frame_idx"].tolist()):
        j = by_frame[f]
        assert torch.equal(it["images"][k], first_sorted["images"][j])
        assert torch.equal(it["c2w"][k], first_sorted["c2w"][j])
    # evaluation ignores it: the index order stays
    ev = make_cfg(tree / "re10k_processed_v2", "data.split=test", "data.shuffle_targets=true")
    assert build_dataset(ev, "eval")[0]["frame_idx"].tolist() == [0, 8, 1, 4, 7]


def test_eval_uses_view_index_and_skips_null(tree):
    split = tree / "dynamic_re10k" / "test"
    table = json.loads((split / "dre10k_final_context_2_view_idx.json").read_text())
    table["dynamic_test_0000"] = None
    (split / "with_null.json").write_text(json.dumps(table))
    cfg = make_cfg(tree / "dynamic_re10k", "data.dataset=dynamic", "data.split=test",
                   "data.list_file=dre10k_final_context_2.txt", "data.view_idx_file=with_null.json", tgt=6)
    ds = build_dataset(cfg, "eval")
    assert len(ds) == 1
    item = ds[0]
    entry = table["dynamic_test_0001"]
    assert item["scene"] == "dynamic_test_0001" and item["frame_idx"].tolist() == entry["context"] + entry["target"]
    # Fewer targets requested than listed: an evenly spread subset, context untouched.
    sub = build_dataset(make_cfg(tree / "dynamic_re10k", "data.dataset=dynamic", "data.split=test",
                                 "data.view_idx_file=with_null.json", tgt=3), "eval")[0]["frame_idx"].tolist()
    assert sub[:2] == entry["context"] and sub[2:] == [entry["target"][i] for i in (0, 2, 5)]
    # Without an index, eval is deterministic and spread over the window.
    plain = build_dataset(make_cfg(tree / "re10k_processed_v2", "data.split=test"), "eval")
    assert plain[0]["frame_idx"].tolist() == plain[0]["frame_idx"].tolist() == [0, 8, 1, 4, 7]


def test_multi_worker_dataloader_is_reproducible(tree):
    ds = build_dataset(make_cfg(tree / "dynamic_re10k", "data.dataset=dynamic"), "train")

    def run():
        torch.manual_seed(123)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=True)
        return [(b["frame_idx"], b["scene"], b["motion_masks"].shape) for b in loader]

    first, second = run(), run()
    assert len(first) == 2 and first[0][2] == (2, 5, 1, 32, 32)
    for (fa, sa, _), (fb, sb, _) in zip(first, second):
        assert sa == sb and torch.equal(fa, fb)
    # With the epoch pinned, the worker that loads an item does not matter (resumable mid-epoch).
    ds.set_epoch(3)
    by_workers = [b["frame_idx"] for b in torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2)]
    in_process = [ds[i]["frame_idx"][None] for i in range(len(ds))]
    assert all(torch.equal(a, b) for a, b in zip(by_workers, in_process))


def test_rgba_grayscale_and_absolute_paths(tree, tmp_path):
    src = tree / "re10k_processed_v2" / "test"
    root = tmp_path / "copy"
    shutil.copytree(src, root / "test")
    split = root / "test"
    meta_path = split / "metadata" / "static_test_0000.json"
    meta = json.loads(meta_path.read_text())
    for f in meta["frames"]:  # absolute image paths
        f["image_path"] = str(split / f["image_path"])
    meta_path.write_text(json.dumps(meta))
    (split / "full_list.txt").write_text(f"{meta_path}\nmetadata/static_test_0001.json\n")  # absolute + relative
    first = Path(meta["frames"][0]["image_path"])
    rgb = np.asarray(Image.open(first))
    Image.fromarray(np.concatenate([rgb, np.full_like(rgb[..., :1], 7)], -1), "RGBA").save(first)
    Image.open(Path(meta["frames"][8]["image_path"])).convert("L").save(Path(meta["frames"][8]["image_path"]))
    ds = build_dataset(make_cfg(root, "data.split=test", size=48), "eval")
    assert len(ds) == 2
    item = ds[0]
    assert item["frame_idx"].tolist()[:2] == [0, 8]
    torch.testing.assert_close(item["images"][0], torch.tensor(rgb).permute(2, 0, 1).float() / 255)
    gray = item["images"][1]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_preload_gives_the_same_items_and_reads_no_image_file(tree, tmp_path):
    root = tmp_path / "dyn"
    shutil.copytree(tree / "dynamic_re10k", root)
    plain, pre = (build_dataset(make_cfg(root, "data.dataset=dynamic", f"data.preload={p}"), "train")
                  for p in ("false", "true"))
    assert "36 preloaded" in pre.summary() and "preloaded" not in plain.summary()
    for ds in (plain, pre):
        ds.set_epoch(2)
    expected = [plain[i] for i in range(len(plain))]
    for a in expected:
        assert a["images"].shape == (5, 3, 32, 32)
    shutil.rmtree(root / "train" / "images")  # from here on the frames come from memory alone
    for i, a in enumerate(expected):
        b = pre[i]
        assert a["scene"] == b["scene"] and torch.equal(a["frame_idx"], b["frame_idx"])
        for key in ("images", "fxfycxcy", "c2w", "motion_masks", "clean_images"):
            assert torch.equal(a[key], b[key]), key
    with pytest.raises(DataError, match="is missing"):
        plain[0]


def test_preload_reads_only_the_views_of_an_evaluation_index(tree):
    cfg = [tree / "dynamic_re10k", "data.dataset=dynamic", "data.split=test",
           "data.list_file=dre10k_final_context_2.txt", "data.view_idx_file=dre10k_final_context_2_view_idx.json"]
    plain = build_dataset(make_cfg(*cfg, tgt=3), "eval")
    pre = build_dataset(make_cfg(*cfg, "data.preload=true", tgt=3), "eval")
    assert len(pre) == 2 and "10 preloaded" in pre.summary()  # 2 context + 3 targets a scene, of 12 frames
    for i in range(2):
        assert torch.equal(plain[i]["frame_idx"], pre[i]["frame_idx"])
        assert torch.equal(plain[i]["images"], pre[i]["images"])


def test_preload_refuses_or_skips_a_bad_frame_as_loading_does(tree, tmp_path):
    root = tmp_path / "static"
    shutil.copytree(tree / "re10k_processed_v2", root)
    meta = json.loads((root / "train/metadata/static_train_0001.json").read_text())
    bad = root / "train" / meta["frames"][5]["image_path"]
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"cannot read {re.escape(str(bad))}"):
        build_dataset(make_cfg(root, "data.preload=true"), "train")
    pre = build_dataset(make_cfg(root, "data.preload=true", "data.on_error=skip"), "train")
    assert "35 preloaded" in pre.summary()
    # A sample that needs the bad frame reads it again and falls through to the next scene, as without preloading.
    plain = build_dataset(make_cfg(root, "data.on_error=skip"), "train")
    for epoch in range(6):
        for ds in (pre, plain):
            ds.set_epoch(epoch)
        for i in range(len(pre)):
            a, b = pre[i], plain[i]
            assert a["scene"] == b["scene"] and torch.equal(a["images"], b["images"])
    assert pre.skipped == plain.skipped >= 1


def test_preload_refuses_a_split_larger_than_the_free_memory(tree, monkeypatch):
    import wildrayzer.data.lvsm as lvsm

    assert lvsm.available_memory() > 0  # Linux: read from /proc/meminfo
    need = 36 * 32 * 32 * 3  # 3 training scenes x 12 frames at 32x32
    cfg = make_cfg(tree / "re10k_processed_v2", "data.preload=true")
    monkeypatch.setattr(lvsm, "available_memory", lambda: need)
    with pytest.raises(DataError, match=r"data.preload needs 0.00 GB for the 36 frames .* set data.preload=false"):
        build_dataset(cfg, "train")
    monkeypatch.setattr(lvsm, "available_memory", lambda: 2 * need)
    assert "36 preloaded" in build_dataset(cfg, "train").summary()
