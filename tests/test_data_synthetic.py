"""Conventions of the synthetic benchmark, checked on the files it writes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from wildrayzer.data.raycast import Material, Sprite, camera_rays, cast
from wildrayzer.data.scenes import look_at, random_scene, sprite_alpha
from wildrayzer.data.synthetic import MARKER, SynthParams, ensure_default_data, generate, is_complete, scene_rng
from wildrayzer.data.textures import make_texture, sample_bilinear
from wildrayzer.geometry import plucker_rays, w2c_to_c2w

PARAMS = SynthParams(static_train=2, static_test=2, dynamic_train=2, dynamic_test=2, frames=12, res=64, seed=3,
                     coco_images=3)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, PARAMS, progress=False)
    return out


def _load(split_dir: Path, scene: str):
    meta = json.loads((split_dir / "metadata" / f"{scene}.json").read_text())
    imgs = np.stack([np.asarray(Image.open(split_dir / f["image_path"])) for f in meta["frames"]]) / 255.0
    depth = np.stack([np.asarray(Image.open(split_dir / "depth" / scene / Path(f["image_path"]).name))
                      for f in meta["frames"]]) / 1000.0
    w2c = np.array([f["w2c"] for f in meta["frames"]])
    k = np.array([f["fxfycxcy"] for f in meta["frames"]])
    return meta, imgs.astype(np.float64), depth, w2c, k


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """img: (H, W[, C]); x, y: pixel-index coordinates (centre of pixel k at k) -> interpolated values."""
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    if img.ndim == 3:
        fx, fy = fx[:, None], fy[:, None]
    return ((img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx) * (1 - fy)
            + (img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx) * fy)


def _reproject(imgs, depth, w2c, k, i, j, convention="opencv"):
    """Warp every pixel of frame i into frame j with GT depth and poses.

    Keeps textured pixels (colour changes by > 0.08 to a neighbour, where a wrong convention shows) visible in j
    (inverse depth agrees to 1 %) that land within 0.15 px of a pixel centre of j, and returns their colour errors
    against that pixel (no interpolation involved) and the visible fraction."""
    h, w = depth.shape[1:]
    pad = np.pad(imgs[i], ((1, 1), (1, 1), (0, 0)), mode="edge")
    grad = np.max([np.abs(pad[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx] - imgs[i]).max(-1)
                   for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0))], axis=0)
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    if convention == "corner":  # pixel (u, v) at (u, v) instead of its centre (u + 0.5, v + 0.5)
        u, v = u - 0.5, v - 0.5
    fx, fy, cx, cy = k[i]
    z = depth[i]
    x_cam = np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z, np.ones_like(z)], -1).reshape(-1, 4)
    c2w_i, w2c_j = np.linalg.inv(w2c[i]), w2c[j]
    if convention == "swapped":  # the classic bug: treating w2c as c2w
        c2w_i, w2c_j = w2c[i], np.linalg.inv(w2c[j])
    if convention == "opengl":  # camera looks down -z with y up
        flip = np.diag([1.0, -1.0, -1.0, 1.0])
        c2w_i, w2c_j = c2w_i @ flip, flip @ w2c_j
    xj = (w2c_j @ c2w_i @ x_cam.T).T
    fxj, fyj, cxj, cyj = k[j]
    zj = xj[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uj = fxj * xj[:, 0] / zj + cxj - 0.5  # pixel-index coordinates: centre of pixel n at n
        vj = fyj * xj[:, 1] / zj + cyj - 0.5
    inside = (zj > 0.05) & (uj >= 0) & (uj < w - 1) & (vj >= 0) & (vj < h - 1)
    uj, vj, zj, src = uj[inside], vj[inside], zj[inside], imgs[i].reshape(-1, 3)[inside]
    textured = grad.reshape(-1)[inside] > 0.08
    visible = np.abs(_bilinear(1.0 / depth[j], uj, vj) * zj - 1.0) < 0.01  # not occluded in frame j
    near = visible & textured & (np.abs(uj - np.round(uj)) < 0.15) & (np.abs(vj - np.round(vj)) < 0.15)
    hit = imgs[j][np.round(vj[near]).astype(int), np.round(uj[near]).astype(int)]
    return np.abs(hit - src[near]).max(-1), visible.sum() / (h * w)


@pytest.mark.parametrize("scene_idx", [0, 1])
def test_static_pixels_reproject_onto_same_colour(tree, scene_idx):
    split = tree / "re10k_processed_v2" / "train"
    _, imgs, depth, w2c, k = _load(split, f"static_train_{scene_idx:04d}")
    pairs = [(i, i + g) for g in (1, 3) for i in range(PARAMS.frames - g)]
    pairs += [(j, i) for i, j in pairs]
    errs = {c: [] for c in ("opencv", "swapped", "opengl", "corner")}
    for i, j in pairs:
        err, frac = _reproject(imgs, depth, w2c, k, i, j)
        assert frac > 0.15, f"only {frac:.0%} of pixels reproject consistently ({i}->{j})"
        errs["opencv"].append(err)
        for wrong in ("swapped", "opengl", "corner"):
            errs[wrong].append(_reproject(imgs, depth, w2c, k, i, j, wrong)[0])
    err = np.concatenate(errs.pop("opencv"))
    assert err.size > 200
    assert np.median(err) < 0.01 and np.quantile(err, 0.9) < 0.04, (np.median(err), np.quantile(err, 0.9))
    rate = (err < 0.02).mean()
    assert rate > 0.85, rate
    for wrong, e in errs.items():  # each convention bug loses many of the colour matches on textured pixels
        e = np.concatenate(e)
        assert (e < 0.02).mean() < rate - 0.2, (wrong, (e < 0.02).mean(), rate)


def test_metadata_is_the_rendered_camera_and_depth_is_z_depth(tree):
    split = tree / "re10k_processed_v2" / "test"
    _, _, depth, w2c, k = _load(split, "static_test_0001")
    spec = random_scene(scene_rng(PARAMS.seed, "static", "test", 1), PARAMS.frames, PARAMS.res, PARAMS.res, False)
    np.testing.assert_allclose(np.linalg.inv(w2c), spec.c2w, atol=1e-9)
    np.testing.assert_allclose(k[0], spec.fxfycxcy, atol=1e-9)
    rot = spec.c2w[:, :3, :3]
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-9)
    assert np.all(rot[:, 1, 1] < 0), "image y must point down in a y-up world for upright cameras"
    for f in (0, 7):
        o, d = camera_rays(spec.c2w[f], spec.fxfycxcy, PARAMS.res, PARAMS.res)
        t, _ = cast(spec.static_prims(), o, d)
        x = np.concatenate([o + t[:, None] * d, np.ones((len(d), 1))], 1) @ w2c[f].T  # hit points, camera frame
        np.testing.assert_allclose(x[:, 2], depth[f].reshape(-1), atol=6e-4)  # stored depth = camera z (mm PNG)
        uv = x[:, :2] / x[:, 2:3] * k[f, :2] + k[f, 2:]
        v, u = np.meshgrid(np.arange(PARAMS.res) + 0.5, np.arange(PARAMS.res) + 0.5, indexing="ij")
        np.testing.assert_allclose(uv, np.stack([u, v], -1).reshape(-1, 2), atol=1e-3)  # through pixel centres


def test_plucker_rays_from_metadata_match_raycast_directions(tree):
    split = tree / "dynamic_re10k" / "train"
    _, _, _, w2c, k = _load(split, "dynamic_train_0001")
    spec = random_scene(scene_rng(PARAMS.seed, "dynamic", "train", 1), PARAMS.frames, PARAMS.res, PARAMS.res, True)
    c2w = w2c_to_c2w(torch.from_numpy(w2c))
    rays = plucker_rays(c2w, torch.from_numpy(k), PARAMS.res, PARAMS.res).numpy()  # (F, H, W, 6)
    for f in range(PARAMS.frames):
        o, d = camera_rays(spec.c2w[f], spec.fxfycxcy, PARAMS.res, PARAMS.res)
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        np.testing.assert_allclose(rays[f, ..., 3:].reshape(-1, 3), d, atol=1e-5)
        np.testing.assert_allclose(rays[f, ..., :3].reshape(-1, 3), np.cross(o, d), atol=1e-4)
    # Half a pixel matters: rays through pixel corners instead of centres are measurably different.
    corner = plucker_rays(c2w[:1], torch.from_numpy(k[:1]) + torch.tensor([0.0, 0.0, 0.5, 0.5]), 64, 64)[0].numpy()
    _, d0 = camera_rays(spec.c2w[0], spec.fxfycxcy, 64, 64)
    assert np.abs(corner[..., 3:].reshape(-1, 3) - d0 / np.linalg.norm(d0, axis=1, keepdims=True)).max() > 1e-3


def test_clean_equals_dynamic_outside_transient_mask(tree):
    split = tree / "dynamic_re10k" / "test"
    areas = []
    for scene in ("dynamic_test_0000", "dynamic_test_0001"):
        for f in range(PARAMS.frames):
            img = np.asarray(Image.open(split / "images" / scene / f"{f:05d}.png"))
            clean = np.asarray(Image.open(split / "clean_images" / scene / f"{f:05d}.png"))
            mask = np.asarray(Image.open(split / "binary_masks" / scene / f"{f:05d}.png"))
            assert set(np.unique(mask)) <= {0, 255}
            m = mask > 0
            np.testing.assert_array_equal(img[~m], clean[~m])
            if m.any():
                assert (img[m] != clean[m]).any(-1).mean() > 0.8  # a transient really covers those pixels
            areas.append(int(m.sum()))
    assert max(areas) > 20, "transients should be visible"
    assert len(set(areas)) > 3, "transients should move between frames"


@pytest.mark.parametrize("travel", [(0.5, 0.8), (3.0, 3.5)])
def test_transients_walk_the_requested_distance(travel):
    walked = []
    for i in range(6):
        spec = random_scene(scene_rng(0, "dynamic", "train", i), 12, 32, 32, True, transient_travel=travel)
        walked += [float(np.linalg.norm(tr.path[-1] - tr.path[0])) for tr in spec.transients]
    assert walked and all(travel[0] - 1e-4 <= d <= travel[1] + 1e-4 for d in walked)


def test_transient_scale_multiplies_every_transient_size():
    """Capsules are drawn 0.18-0.3 m in radius, boxes 0.15-0.3 m half wide, sprites 0.3-0.6 m half wide (scenes.py);
    at scale 2 none is narrower than twice its range's minimum, at 1 every one lies inside its range."""
    low = {"capsule": 0.18, "box": 0.15, "sprite": 0.3}
    for scale, ok in ((1.0, lambda w, k: low[k] - 1e-6 <= w <= 2 * low[k] + 1e-6),
                      (2.0, lambda w, k: w >= 2 * low[k] - 1e-6)):
        kinds = []
        for i in range(6):
            spec = random_scene(scene_rng(0, "dynamic", "train", i), 12, 32, 32, True, transient_scale=scale)
            assert all(ok(tr.size[0], tr.kind) for tr in spec.transients), (scale, [tr.size for tr in spec.transients])
            kinds += [tr.kind for tr in spec.transients]
        assert len(kinds) >= 4  # larger ones are redrawn more often (they must clear the room and the objects)


def test_layout_lists_and_view_indices(tree):
    for root, kind in (("re10k_processed_v2", "static"), ("dynamic_re10k", "dynamic")):
        for split in ("train", "test"):
            d = tree / root / split
            lines = (d / "full_list.txt").read_text().split()
            assert lines == [f"metadata/{kind}_{split}_{i:04d}.json" for i in range(2)]
            assert all((d / line).is_file() for line in lines)
    test = tree / "dynamic_re10k" / "test"
    for prefix in ("dre10k", "wildrayzer"):
        idx = json.loads((test / f"{prefix}_final_context_2_view_idx.json").read_text())
        listed = (test / f"{prefix}_final_context_2.txt").read_text().split()
        assert listed == (test / "full_list.txt").read_text().split()
        for entry in idx.values():
            a, b = entry["context"]
            assert 0 <= a < b < PARAMS.frames and len(entry["target"]) == 6
            assert all(a < t < b for t in entry["target"])
    coco = json.loads((tree / "coco" / "annotations" / "instances_synthetic.json").read_text())
    assert {"images", "annotations", "categories"} <= set(coco) and coco["annotations"]
    assert all((tree / "coco" / "images" / im["file_name"]).is_file() for im in coco["images"])


def _digest(root: Path) -> dict[str, bytes]:
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.name != MARKER]
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_generation_is_deterministic_per_seed(tmp_path):
    small = SynthParams(static_train=1, static_test=1, dynamic_train=1, dynamic_test=1, frames=8, res=24, seed=5,
                        coco_images=2)
    generate(tmp_path / "a", small, progress=False)
    generate(tmp_path / "b", small, workers=2, progress=False)  # the process pool writes the same bytes
    generate(tmp_path / "c", SynthParams(**{**small.__dict__, "seed": 6}), progress=False)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_ensure_default_data_regenerates_half_written_sets(tmp_path):
    small = SynthParams(static_train=1, static_test=1, dynamic_train=1, dynamic_test=1, frames=8, res=16, seed=0,
                        coco_images=1)
    root = ensure_default_data(tmp_path / "synthetic", small)
    assert is_complete(root, small)
    img = root / "dynamic_re10k" / "train" / "images" / "dynamic_train_0000" / "00003.png"
    stamp = img.stat().st_mtime_ns
    ensure_default_data(root, small)  # complete: nothing rewritten
    assert img.stat().st_mtime_ns == stamp
    (root / MARKER).unlink()  # as if interrupted before the marker was written
    img.unlink()
    ensure_default_data(root, small)
    assert img.is_file() and is_complete(root, small)
    assert not is_complete(root, SynthParams(**{**small.__dict__, "res": 32}))


def test_texture_lookup_matches_a_per_texel_reference():
    """The padded, modulo-free bilinear lookup equals a plain wrap-around reference, and is exact at texel centres."""
    tex = make_texture("astronaut", 37, 0)
    rng = np.random.default_rng(0)
    u, v = rng.uniform(-100, 100, 4000), rng.uniform(-100, 100, 4000)
    got = sample_bilinear(tex, u, v)
    n = tex.shape[0]
    for k in range(0, 4000, 97):  # slow scalar reference
        x, y = u[k] - 0.5, v[k] - 0.5
        i, j = int(np.floor(x)), int(np.floor(y))
        a, b = x - i, y - j
        ref = ((1 - a) * (1 - b) * tex[j % n, i % n] + a * (1 - b) * tex[j % n, (i + 1) % n]
               + (1 - a) * b * tex[(j + 1) % n, i % n] + a * b * tex[(j + 1) % n, (i + 1) % n])
        np.testing.assert_allclose(got[k], ref, atol=2e-5)
    at_centres = sample_bilinear(tex, np.array([3.5, 40.5]), np.array([7.5, -29.5]))  # both wrap to texel (3, 7)
    np.testing.assert_array_equal(at_centres, tex[[7, 7], [3, 3]])


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_sprite_cut_out_follows_its_alpha_mask_from_both_sides(side):
    """A 1 x 2 m horse cut-out seen head-on covers exactly its (projected) alpha mask, mirrored when seen from the
    other side."""
    alpha = sprite_alpha("horse", 128)
    sprite = Sprite(np.zeros(3, dtype=np.float32), 0.5, 2.0, 0.0, alpha, [Material(np.ones((8, 8, 3), np.float32), 1)])
    # The sprite's plane is z = 0. Camera 4 m away on the given side, looking at the sprite's centre; with f = 256 px
    # the 1 x 2 m sprite covers 64 x 128 px centred in the 256 x 256 image.
    c2w = look_at(np.array([0.0, 1.0, -4.0 * side]), np.array([0.0, 1.0, 0.0]))
    o, d = camera_rays(c2w, np.array([256.0, 256.0, 128.0, 128.0]), 256, 256)
    hit = np.isfinite(cast([sprite], o, d)[0]).reshape(256, 256)
    got = hit[64:192, 96:160]
    assert got.sum() == hit.sum(), "nothing outside the sprite's rectangle"
    want = cv2.resize(alpha.astype(np.uint8), (64, 128), interpolation=cv2.INTER_NEAREST).astype(bool)
    if side > 0:  # a camera on the -z side looking +z has image-right along world -x, i.e. the sprite's -x: mirrored
        want = want[:, ::-1]
    iou = (got & want).sum() / (got | want).sum()
    iou_flipped = (got & want[:, ::-1]).sum() / (got | want[:, ::-1]).sum()
    assert iou > 0.85 and iou_flipped < 0.6, (iou, iou_flipped)


def test_ensure_default_data_leaves_a_complete_set_of_other_parameters_alone(tmp_path):
    """Runs may be reading a finished set (the v1.5 session lost a training run and a user's list file to a silent
    regeneration): a complete set made with other parameters is refused in one clear error, byte for byte intact."""
    from wildrayzer.errors import UserError

    small = SynthParams(static_train=1, static_test=1, dynamic_train=1, dynamic_test=1, frames=8, res=16, seed=0,
                        coco_images=1)
    root = ensure_default_data(tmp_path / "synthetic", small)
    (root / "dynamic_re10k" / "train" / "val_list.txt").write_text("metadata/dynamic_train_0000.json\n")
    before = _digest(root)
    other = SynthParams(**{**small.__dict__, "res": 24, "transient_travel": (0.6, 2.2)})
    with pytest.raises(UserError, match=r"other parameters \(res 16 there, 24 wanted; transient_travel") as err:
        ensure_default_data(root, other)
    assert "\n" not in str(err.value) and "move it away" in str(err.value)
    assert _digest(root) == before and is_complete(root, small)
    marker = json.loads((root / MARKER).read_text())
    older = {k: v for k, v in marker["params"].items() if k != "transient_scale"}  # written before the field existed
    (root / MARKER).write_text(json.dumps({**marker, "params": older}))
    assert is_complete(root, small)  # it was made with scale 1
    with pytest.raises(UserError, match=r"transient_scale 1.0 there, 1.35 wanted"):
        ensure_default_data(root, SynthParams(**{**small.__dict__, "transient_scale": 1.35}))
    (root / MARKER).write_text(json.dumps({**marker, "version": 0}))  # an older generator's set
    with pytest.raises(UserError, match="another generator"):
        ensure_default_data(root, small)
    assert _digest(root) == before


def test_regeneration_replaces_only_what_the_generator_wrote(tmp_path):
    """Over a half-written or older synthetic tree, generate() removes its own scenes (of any count), lists and
    cut-outs, and keeps everything else: a user's list, a scene of another name, a note in coco/."""
    big = SynthParams(static_train=3, static_test=1, dynamic_train=1, dynamic_test=1, frames=8, res=16, seed=0,
                      coco_images=2)
    root = tmp_path / "synthetic"
    generate(root, big, progress=False)
    train = root / "re10k_processed_v2" / "train"
    mine = {train / "val_list.txt": "metadata/static_train_0000.json\n", train / "images" / "my_scene" / "a.png": "x",
            train / "metadata" / "my_scene.json": "{}", root / "coco" / "images" / "mine.png": "y",
            root / "coco" / "README.txt": "cut-outs"}
    for path, text in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    small = SynthParams(**{**big.__dict__, "static_train": 2, "coco_images": 1})
    generate(root, small, progress=False)
    assert all(path.read_text() == text for path, text in mine.items())
    assert not (train / "images" / "static_train_0002").exists()  # the older, larger set's extra scene is gone
    assert not (train / "metadata" / "static_train_0002.json").exists()
    assert not (root / "coco" / "images" / "synthetic_000001.png").exists()
    fresh = tmp_path / "fresh"
    generate(fresh, small, progress=False)
    got = {k: v for k, v in _digest(root).items() if (root / k) not in mine}
    assert got == _digest(fresh)  # apart from the user's files, the same bytes as a generation into a new folder
