"""Import one's own photos or video as an LVSM-layout scene so inference can run on it.

``wildrayzer data import --images DIR | --video FILE --out DIR`` writes ``DIR/<split>/``::

    images/<scene>/00000.png      frames, shorter side resized to --res (aspect kept; the loader centre-crops)
    metadata/<scene>.json         fxfycxcy from EXIF (FocalLengthIn35mmFilm) or a default field of view, flagged in
                                  "import": {"intrinsics_source": "exif_35mm" | "default_fov", ...};
                                  w2c are identity placeholders: the self-supervised model never reads poses
                                  (they only serve pose metrics, which are meaningless for imported data)
    full_list.txt                 every scene imported into this split so far
    view_idx.json                 {scene: {"context": [first, last], "target": 6 frames spread in between}}

Run inference with ``data.root=DIR data.split=<split> data.list_file=full_list.txt data.view_idx_file=view_idx.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError
from ..fileio import atomic_write_bytes, check_name
from .frames import READ_ERRORS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
EXIF_IFD, FOCAL_35MM = 0x8769, 0xA405
NUM_TARGETS = 6


def default_fxfycxcy(height: int, width: int, fov_deg: float) -> list[float]:
    """Pinhole intrinsics with a horizontal field of view ``fov_deg`` and the principal point at the centre."""
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return [f, f, width / 2.0, height / 2.0]


def exif_fxfycxcy(im: Image.Image) -> list[float] | None:
    """Intrinsics from the 35 mm-equivalent focal length (36 mm across the longer side), if the EXIF has it."""
    try:
        f35 = im.getexif().get_ifd(EXIF_IFD).get(FOCAL_35MM)
    except (AttributeError, KeyError, ValueError, TypeError):
        return None
    if not f35 or float(f35) <= 0:
        return None
    w, h = im.size
    f = float(f35) / 36.0 * max(w, h)
    return [f, f, w / 2.0, h / 2.0]


def image_frames(folder: Path) -> Iterator[tuple[np.ndarray, list[float] | None]]:
    """Sorted image files of ``folder`` -> (H, W, 3) uint8 frames (EXIF orientation applied) and EXIF intrinsics."""
    if not folder.is_dir():
        raise DataError(f"--images {folder} is not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"--images {folder} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    for path in files:
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                yield np.asarray(im.convert("RGB")), exif_fxfycxcy(im)
        except READ_ERRORS as e:
            raise DataError(f"cannot read image {path} ({e.__class__.__name__}); remove or replace it") from None


def video_frames(path: Path, every: int = 1, max_frames: int = 0) -> Iterator[tuple[np.ndarray, None]]:
    """Every ``every``-th frame of a video (imageio + ffmpeg) -> (H, W, 3) uint8 frames, no intrinsics."""
    import imageio.v2 as imageio

    if not path.is_file():
        raise DataError(f"--video {path} not found")
    try:
        reader = imageio.get_reader(str(path), "ffmpeg")
    except (OSError, RuntimeError, ValueError) as e:
        raise DataError(f"cannot open video {path} ({e.__class__.__name__}); is it a video file?") from None
    kept = 0
    try:
        for i, frame in enumerate(reader):
            if i % every:
                continue
            yield np.asarray(frame)[..., :3], None
            kept += 1
            if max_frames and kept >= max_frames:
                break
    finally:
        reader.close()


def resize_short_side(img: np.ndarray, res: int) -> np.ndarray:
    h, w = img.shape[:2]
    if res <= 0 or min(h, w) == res:
        return img
    s = res / min(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def view_index(num_frames: int) -> dict[str, list[int]]:
    """Context = first and last frame; NUM_TARGETS targets evenly spread in between (repeats when few frames)."""
    last = num_frames - 1
    inner = np.linspace(0, last, NUM_TARGETS + 2)[1:-1]
    return {"context": [0, last], "target": [int(round(x)) for x in inner]}


def import_scene(frames: Iterable[tuple[np.ndarray, list[float] | None]], out: Path, scene: str, res: int = 256,
                 split: str = "test", fov_deg: float = 60.0, source: str = "") -> Path:
    """Write the frames as one LVSM scene into ``out/split`` -> metadata path.

    The frames go to a hidden staging folder first and replace the scene's images (an existing scene of that name
    included) only once all were read, so a bad frame, too few frames or an interrupted read leaves the split as it
    was (at worst with a hidden ``.NAME.importing<pid>`` folder). Metadata, scene list and view index are each
    replaced atomically."""
    check_name(scene, "scene name (--scene)", DataError)
    check_name(split, "split (--split)", DataError)
    split_dir = out / split
    img_dir = split_dir / "images" / scene
    staging = img_dir.with_name(f".{scene}.importing{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (split_dir / "metadata").mkdir(parents=True, exist_ok=True)
    try:
        records, sources = _write_frames(frames, staging, scene, res, fov_deg)
        if len(records) < 2:
            raise DataError(f"scene '{scene}' has {len(records)} frame(s); at least 2 are needed (2 context views)")
        idx_path = split_dir / "view_idx.json"
        try:
            table = json.loads(idx_path.read_text()) if idx_path.is_file() else {}
        except json.JSONDecodeError:
            raise DataError(f"existing {idx_path} is not valid JSON; delete it and import again") from None
        if img_dir.exists():  # swap in the new frames; the old ones are deleted only after the rename
            old = img_dir.with_name(f".{scene}.replaced{os.getpid()}")
            os.replace(img_dir, old)
            os.replace(staging, img_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, img_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    meta = {"scene_name": scene, "frames": records,
            "import": {"source": source, "intrinsics_source": "+".join(sorted(sources)),
                       "default_fov_deg": fov_deg if "default_fov" in sources else None,
                       "poses": "identity placeholders, unused by the self-supervised model"}}
    meta_path = split_dir / "metadata" / f"{scene}.json"
    atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    metas = sorted(p.name for p in (split_dir / "metadata").glob("*.json"))
    atomic_write_bytes(split_dir / "full_list.txt", "".join(f"metadata/{m}\n" for m in metas).encode())
    table[scene] = view_index(len(records))
    atomic_write_bytes(idx_path, json.dumps(table, indent=1).encode())
    return meta_path


def _write_frames(frames: Iterable[tuple[np.ndarray, list[float] | None]], folder: Path, scene: str, res: int,
                  fov_deg: float) -> tuple[list[dict], set[str]]:
    """Resize and save each frame as ``folder/NNNNN.png`` -> (frame records, intrinsics sources used)."""
    records, sources = [], set()
    for i, (frame, exif) in enumerate(frames):
        h0, w0 = frame.shape[:2]
        img = resize_short_side(frame, res)
        h, w = img.shape[:2]
        if exif is not None:
            k = [exif[0] * w / w0, exif[1] * h / h0, exif[2] * w / w0, exif[3] * h / h0]
            sources.add("exif_35mm")
        else:
            k = default_fxfycxcy(h, w, fov_deg)
            sources.add("default_fov")
        name = f"{i:05d}.png"
        Image.fromarray(img).save(folder / name)
        records.append({"image_path": f"images/{scene}/{name}", "fxfycxcy": [float(x) for x in k],
                        "w2c": np.eye(4).tolist()})
    return records, sources
