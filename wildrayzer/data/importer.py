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

import contextlib
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
from ..fileio import atomic_write_bytes, check_name, check_regular_file, fsync_dir, load_json, read_capped
from .frames import READ_ERRORS, check_image_pixels, open_image, pil_rgb

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
            with open_image(path) as im:  # regular files up to MAX_IMAGE_PIXELS only
                im = ImageOps.exif_transpose(im)
                yield pil_rgb(im), exif_fxfycxcy(im)
        except READ_ERRORS as e:
            raise DataError(f"cannot read image {path} ({e.__class__.__name__}); remove or replace it") from None


def video_frames(path: Path, every: int = 1, max_frames: int = 0) -> Iterator[tuple[np.ndarray, None]]:
    """Every ``every``-th frame of a video (imageio + ffmpeg) -> (H, W, 3) uint8 frames, no intrinsics."""
    import imageio.v2 as imageio

    try:
        check_regular_file(path, "--video", DataError)
    except FileNotFoundError:
        raise DataError(f"--video {path} not found") from None
    try:
        reader = imageio.get_reader(str(path), "ffmpeg")
    except (OSError, RuntimeError, ValueError) as e:
        raise DataError(f"cannot open video {path} ({e.__class__.__name__}); is it a video file?") from None
    kept = 0
    try:
        size = reader.get_meta_data().get("size") or (0, 0)
        check_image_pixels(int(size[0]), int(size[1]), f"video {path} (frame size)")
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
    check_image_pixels(size[0], size[1], f"--res {res} would make a frame that", DataError)  # before allocating
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def view_index(num_frames: int) -> dict[str, list[int]]:
    """Context = first and last frame; NUM_TARGETS targets evenly spread in between (repeats when few frames)."""
    last = num_frames - 1
    inner = np.linspace(0, last, NUM_TARGETS + 2)[1:-1]
    return {"context": [0, last], "target": [int(round(x)) for x in inner]}


LIST_FILE, INDEX_FILE = "full_list.txt", "view_idx.json"


def import_scene(frames: Iterable[tuple[np.ndarray, list[float] | None]], out: Path, scene: str, res: int = 256,
                 split: str = "test", fov_deg: float = 60.0, source: str = "") -> Path:
    """Write the frames as one LVSM scene into ``out/split`` -> metadata path.

    Nothing visible changes until the whole import succeeded. The split's existing view index and list file are
    read and checked first (a malformed one is a one-line DataError before anything is written). Frames, metadata,
    list and index are then written under hidden names and swapped in at the end, the list file last (it is what
    the loaders read); a failure at any point removes what this import staged and the folders it created, and
    restores anything already swapped, so the split is as it was (at worst a hidden ``.NAME.importing<pid>`` entry
    of a killed import remains)."""
    check_name(scene, "scene name (--scene)", DataError)
    check_name(split, "split (--split)", DataError)
    split_dir = Path(out) / split
    img_dir, meta_dir = split_dir / "images" / scene, split_dir / "metadata"
    meta_path, list_path, idx_path = meta_dir / f"{scene}.json", split_dir / LIST_FILE, split_dir / INDEX_FILE
    for folder in (Path(out), split_dir, img_dir.parent, meta_dir, img_dir):
        if folder.exists() and not folder.is_dir():
            raise DataError(f"{folder} exists and is not a folder; --out must be a dataset root (or a new folder)")
    for path, what in ((meta_path, "metadata file"), (list_path, "list file"), (idx_path, "view index file")):
        if path.exists() or path.is_symlink():
            check_regular_file(path, f"existing {what}", DataError)
    table = _existing_index(idx_path)
    listed = _existing_list(list_path)
    pid = os.getpid()
    staging = img_dir.with_name(f".{scene}.importing{pid}")
    created = _make_dirs([img_dir.parent, meta_dir])
    staged: list[tuple[Path, Path]] = []
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        records, sources = _write_frames(frames, staging, scene, res, fov_deg)
        if len(records) < 2:
            raise DataError(f"scene '{scene}' has {len(records)} frame(s); at least 2 are needed (2 context views)")
        meta = {"scene_name": scene, "frames": records,
                "import": {"source": source, "intrinsics_source": "+".join(sorted(sources)),
                           "default_fov_deg": fov_deg if "default_fov" in sources else None,
                           "poses": "identity placeholders, unused by the self-supervised model"}}
        table[scene] = view_index(len(records))
        line = f"metadata/{scene}.json"
        lines = listed + ([line] if line not in listed else [])
        for target, data in ((meta_path, json.dumps(meta, indent=1).encode()),
                             (idx_path, json.dumps(table, indent=1).encode()),
                             (list_path, "".join(f"{ln}\n" for ln in lines).encode())):
            tmp = target.with_name(f".{target.name}.importing{pid}")
            staged.append((tmp, target))
            atomic_write_bytes(tmp, data)
        _swap_in(staging, img_dir, staged)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for folder in reversed(created):  # only the folders this import made, and only while empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return meta_path


def _existing_index(path: Path) -> dict:
    """The split's view index (``{}`` when there is none yet); DataError, one line, when it is not a valid one."""
    if not (path.exists() or path.is_symlink()):
        return {}
    try:
        table = load_json(path, "existing view index file", DataError)
    except (OSError, ValueError) as e:
        raise DataError(f"existing {path} is not valid JSON ({type(e).__name__}); fix or delete it, then import "
                        "again (nothing was written)") from None
    bad = None if isinstance(table, dict) else "it is not a JSON object"
    for name, entry in table.items() if bad is None else ():
        if entry is not None and not (isinstance(entry, dict) and isinstance(entry.get("context"), list)
                                      and isinstance(entry.get("target"), list)):
            bad = f"entry '{name}' is not {{'context': [...], 'target': [...]}} or null"
            break
    if bad:
        raise DataError(f"existing {path} is not a view index ({bad}); fix or delete it, then import again "
                        "(nothing was written)")
    return table


def _existing_list(path: Path) -> list[str]:
    """The split's list file lines (``[]`` when there is none yet); DataError, one line, when it is unreadable,
    not UTF-8 text, or names a file twice."""
    if not (path.exists() or path.is_symlink()):
        return []
    try:
        text = read_capped(path, "existing list file", DataError).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"existing list file {path} is not readable text ({type(e).__name__}); fix or delete it, "
                        "then import again (nothing was written)") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    dup = next((ln for i, ln in enumerate(lines) if ln in lines[:i] and not ln.startswith("#")), None)
    if dup is not None:
        raise DataError(f"existing list file {path} names '{dup}' twice; list each scene once, then import again "
                        "(nothing was written)")
    return lines


def _make_dirs(folders: list[Path]) -> list[Path]:
    """Create ``folders`` (and missing parents) -> the folders created, outermost first."""
    created: list[Path] = []
    for folder in folders:
        missing = []
        p = folder
        while not p.exists():
            missing.append(p)
            p = p.parent
        for m in reversed(missing):
            try:
                m.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                for c in reversed(created):
                    with contextlib.suppress(OSError):
                        c.rmdir()
                raise DataError(f"cannot create {m} ({e.strerror}); choose a writable --out") from None
            created.append(m)
    return created


def _swap_in(staging: Path, img_dir: Path, staged: list[tuple[Path, Path]]) -> None:
    """Rename the staged frames and files into place; if a rename fails, undo the ones already done."""
    pid = os.getpid()
    undo: list = []
    old = img_dir.with_name(f".{img_dir.name}.replaced{pid}")
    backups: list[Path] = []
    try:
        if img_dir.exists():
            os.replace(img_dir, old)
            undo.append(lambda: os.replace(old, img_dir))
        os.replace(staging, img_dir)
        undo.append(lambda: os.replace(img_dir, staging))
        for tmp, target in staged:
            if target.exists():
                backup = target.with_name(f".{target.name}.replaced{pid}")
                try:  # keeps the previous version until the whole import is in place
                    os.link(target, backup)
                except OSError:  # a filesystem without hard links
                    shutil.copy2(target, backup)
                backups.append(backup)
                undo.append(lambda b=backup, t=target: os.replace(b, t))
            else:
                undo.append(lambda t=target: t.unlink())
            os.replace(tmp, target)
    except BaseException:
        for fn in reversed(undo):
            with contextlib.suppress(OSError):
                fn()
        raise
    finally:
        for b in backups:
            b.unlink(missing_ok=True)
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(img_dir.parent)


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
