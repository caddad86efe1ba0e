"""A tiny COCO-format instance set for copy-paste, generated offline.

Objects are ray-cast textured primitives (person-like capsules, balls, boxes, barrels) and the scikit-image horse
silhouette filled with a photograph, composited on textured backgrounds. Annotations alternate between polygons
(``cv2.findContours`` of the object mask) and uncompressed-then-compressed RLE, as in a real ``instances_*.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .raycast import Box, Cylinder, Light, Material, Sphere, camera_rays, cast, shade
from .scenes import TRANSIENT_TEXTURES, look_at
from .textures import ALL_NAMES, make_texture

CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"},
              {"id": 2, "name": "sports ball", "supercategory": "sports"},
              {"id": 3, "name": "suitcase", "supercategory": "accessory"},
              {"id": 4, "name": "barrel", "supercategory": "object"},
              {"id": 5, "name": "horse", "supercategory": "animal"}]
IMAGE_SIZE = 128


def _render_object(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """-> rgb (size, size, 3) float32, mask (size, size) bool, category id."""
    cat = int(rng.integers(1, 6))
    if cat == 5:
        import skimage.data

        sil = ~np.asarray(skimage.data.horse())
        sil = cv2.resize(sil.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
        tex = make_texture(str(rng.choice(["chelsea", "coffee", "grass", "brick"])), size, int(rng.integers(1 << 31)))
        return tex * sil[..., None], sil, cat
    mat = Material(make_texture(str(rng.choice(TRANSIENT_TEXTURES)), 64, int(rng.integers(1 << 31))), 0.6)
    if cat == 1:
        prim, target, dist = Cylinder(0.0, 0.0, 0.25, 1.45, 0.25, capsule=True, materials=[mat]), 0.85, 2.4
    elif cat == 2:
        prim, target, dist = Sphere(np.zeros(3, dtype=np.float32), 0.5, [mat]), 0.0, 1.6
    elif cat == 3:
        half = np.array([0.45, 0.35, 0.2], dtype=np.float32)
        prim, target, dist = Box(np.zeros(3, dtype=np.float32), half, float(rng.uniform(0, np.pi)), [mat]), 0.0, 1.8
    else:
        prim, target, dist = Cylinder(0.0, 0.0, -0.5, 0.5, 0.35, materials=[mat]), 0.0, 2.0
    ang = rng.uniform(0, 2 * np.pi)
    eye = np.array([dist * np.cos(ang), target + rng.uniform(0.2, 0.8), dist * np.sin(ang)])
    c2w = look_at(eye, np.array([0.0, target, 0.0]))
    f = size * 1.1
    fx = np.array([f, f, size / 2, size / 2])
    o, d = camera_rays(c2w, fx, size, size)
    t, idx = cast([prim], o, d)
    light = Light(np.array([0.3, 0.9, 0.3]) / np.linalg.norm([0.3, 0.9, 0.3]), eye + np.array([0.0, 1.0, 0.0]))
    rgb = shade([prim], light, o, d, t, idx).reshape(size, size, 3)
    return rgb, np.isfinite(t).reshape(size, size), cat


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def write_synthetic_coco(out: str | Path, num_images: int = 24, seed: int = 0) -> Path:
    """Write ``out/images/*.png`` and ``out/annotations/instances_synthetic.json`` -> annotation file path."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, 7, i])
        s = IMAGE_SIZE
        canvas = make_texture(str(rng.choice(ALL_NAMES)), s, int(rng.integers(1 << 31))).copy()
        occupied = np.zeros((s, s), dtype=bool)
        for _ in range(int(rng.integers(1, 4))):
            size = int(rng.integers(s // 3, s * 2 // 3))
            rgb, m, cat = _render_object(rng, size)
            y0, x0 = (int(v) for v in rng.integers(0, s - size + 1, 2))
            full = np.zeros((s, s), dtype=bool)
            full[y0 : y0 + size, x0 : x0 + size] = m
            full &= ~occupied  # earlier objects stay on top so every mask is exactly its visible pixels
            if full.sum() < 64:
                continue
            canvas[full] = rgb[full[y0 : y0 + size, x0 : x0 + size]]  # same row-major order in both
            occupied |= full
            if len(anns) % 2 == 0:
                seg = _polygons(full)
                if not seg:
                    continue
            else:
                rle = mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))
                seg = {"size": [int(x) for x in rle["size"]], "counts": rle["counts"].decode("ascii")}
            ys, xs = np.nonzero(full)
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "segmentation": seg,
                         "area": float(full.sum()), "bbox": bbox, "iscrowd": 0})
        name = f"synthetic_{i:06d}.png"
        cv2.imwrite(str(out / "images" / name), np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)[..., ::-1])
        images.append({"id": i + 1, "file_name": name, "height": s, "width": s})
    coco = {"info": {"description": "WildRayZer synthetic copy-paste instances", "version": "1.0", "year": 2026},
            "licenses": [], "images": images, "annotations": anns, "categories": CATEGORIES}
    path = out / "annotations" / "instances_synthetic.json"
    path.write_text(json.dumps(coco))
    return path
