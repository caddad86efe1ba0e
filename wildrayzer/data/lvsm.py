"""LVSM / RealEstate10K-processed loader (static scenes); the base of the Dynamic-RE10K loader.

Layout of a split directory ``<data.root>/<data.split>/``: ``<data.list_file>`` lists metadata JSON paths, one per
line; each is ``{"scene_name", "frames": [{"image_path", "fxfycxcy" (pixels), "w2c" (4x4, OpenCV)}]}``.
Path resolution (both absolute and relative paths work):

* a list line is absolute, or relative to the list file's directory, or relative to the working directory;
* an ``image_path`` is absolute, or relative to the split directory, the metadata file's directory, its parent,
  or the working directory (decided once per scene from its first frame).

The index (all metadata parsed and validated) is built once in ``__init__``; workers only read images. Refused
while indexing (one line naming the file): a list file naming one scene twice; cameras that are non-finite, not an
invertible rigid pose (bottom row [0, 0, 0, 1], orthonormal rotation) or with fx, fy, cx, cy <= 0; view indices
that are not integers, out of range, or repeat a context view. Files must be regular files (no FIFOs or devices);
metadata, list and view-index files at most 64 MiB and 64 levels deep (see :mod:`wildrayzer.fileio`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ..errors import DataError
from ..fileio import load_json, read_capped
from ..geometry import w2c_to_c2w
from .frames import READ_ERRORS, adjust_intrinsics, read_rgb, resize_crop, to_chw

log = logging.getLogger(__name__)


def _is_index(x) -> bool:
    """A JSON integer (not a bool, not 1.0 or "1")."""
    return isinstance(x, int) and not isinstance(x, bool)


def _numbers(value) -> np.ndarray:
    """Nested lists of JSON numbers -> float64 array; a string, boolean or null anywhere is a ValueError (numpy would
    turn "1" and true into 1.0 without a word)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        elif type(v) not in (int, float):
            raise ValueError(f"fxfycxcy and w2c must hold numbers, not {type(v).__name__} values like {v!r:.20}")
    return np.array(value, dtype=np.float64)


def camera_problem(fxfycxcy: np.ndarray, w2c: np.ndarray, tol: float = 1e-3) -> str | None:
    """fxfycxcy: (F, 4) pixels, w2c: (F, 4, 4) -> what is wrong with the first bad frame's camera, or None.

    Every value finite; fx, fy, cx, cy > 0; w2c an invertible rigid pose: bottom row [0, 0, 0, 1] and an
    orthonormal rotation block (|R^T R - I| <= ``tol``), which is what :func:`~wildrayzer.geometry.invert_pose`
    assumes."""
    for i in range(len(w2c)):
        k, pose = fxfycxcy[i], w2c[i]
        if not np.isfinite(pose).all():
            return f"frame {i} has a non-finite w2c (NaN or infinity)"
        if not np.isfinite(k).all():
            return f"frame {i} has a non-finite fxfycxcy (NaN or infinity)"
        if (k <= 0).any():
            return (f"frame {i} has fxfycxcy {k.tolist()} with a value <= 0 (focal lengths and principal point are "
                    "positive pixels)")
        rot = pose[:3, :3]
        err = float(np.abs(rot.T @ rot - np.eye(3)).max())
        if err > tol or np.abs(pose[3] - [0.0, 0.0, 0.0, 1.0]).max() > tol:
            return (f"frame {i} has a w2c that is not an invertible rigid camera pose (bottom row {pose[3].tolist()}, "
                    f"rotation block off orthonormal by {err:.3g}; singular or scaled)")
    return None


@dataclass
class SceneRecord:
    name: str
    meta_path: Path
    image_paths: list[Path]
    fxfycxcy: np.ndarray  # (F, 4) pixels at the stored resolution
    c2w: np.ndarray  # (F, 4, 4)


def available_memory() -> int | None:
    """Bytes of memory this machine has free (Linux ``MemAvailable``), or None where it cannot tell."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _resolve(rel: str, bases: list[Path]) -> Path | None:
    p = Path(rel)
    if p.is_absolute():
        return p if p.exists() else None
    for b in bases:
        if (b / p).exists():
            return b / p
    return None


class LVSMDataset(Dataset):
    """Static LVSM-layout scenes -> dict items as described in docs/CONTRACTS.md (no masks, no clean images)."""

    def __init__(self, cfg, mode: str = "train", seed: int | None = None):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got '{mode}'")
        d, m = cfg.data, cfg.model
        self.mode = mode
        self.on_error = d.on_error
        self.size = int(m.image_size)
        self.num_context, self.num_target = int(m.num_context_views), int(m.num_target_views)
        self.num_views = self.num_context + self.num_target
        self.gap_min, self.gap_max = int(d.frame_gap_min), int(d.frame_gap_max)
        self.shuffle_targets = bool(d.shuffle_targets)
        self.seed = int(cfg.training.seed if seed is None else seed)
        self.epoch = 0
        self._draws = 0
        self.skipped = 0  # samples skipped at load time in this process (on_error=skip)
        self.split_dir = Path(d.root) / d.split
        if not self.split_dir.is_dir():
            raise DataError(f"dataset directory {self.split_dir} does not exist or is not a directory; set data.root "
                            f"and data.split, or run 'wildrayzer data synth'")
        self.scenes = self._read_index(self.split_dir / d.list_file)
        self.items = self._build_items(d.view_idx_file if mode == "eval" else "")
        if self.skipped:
            log.warning("%s: skipped %d bad scene(s) while indexing (data.on_error=skip)", self.split_dir, self.skipped)
        if not self.items:
            raise DataError(f"no usable scenes in {self.split_dir / d.list_file}; check the list file and metadata")
        self._rows: dict[tuple[int, int], int] = {}  # (scene, frame) -> row of the preloaded frames (data.preload)
        if d.preload:
            self._preload()

    # ---------------------------------------------------------------- index
    def _fail(self, msg: str) -> None:
        """raise mode: raise DataError(msg); skip mode: count and log."""
        if self.on_error == "raise":
            raise DataError(msg)
        self.skipped += 1
        log.warning("skipped: %s", msg)

    def _read_index(self, list_path: Path) -> list[SceneRecord]:
        try:
            lines = [ln.strip() for ln in read_capped(list_path, "list file", DataError).decode("utf-8").splitlines()]
        except FileNotFoundError:
            raise DataError(f"list file {list_path} not found; set data.list_file (relative to {self.split_dir})") \
                from None
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read list file {list_path} ({e.__class__.__name__}); fix or regenerate it") \
                from None
        lines = [ln for ln in lines if ln and not ln.startswith("#")]
        if not lines:
            raise DataError(f"list file {list_path} is empty; it must name one metadata JSON per line")
        records, seen_files, seen_names = [], {}, {}
        for line in lines:
            meta = _resolve(line, [list_path.parent, Path.cwd()])
            if meta is None:
                self._fail(f"metadata file '{line}' listed in {list_path} not found; fix the list or the file")
                continue
            key = meta.resolve()
            if key in seen_files:  # a scene listed twice would be trained on twice as often / evaluated twice
                raise DataError(f"list file {list_path} names metadata '{line}' twice (also as '{seen_files[key]}'); "
                                "list each scene once")
            seen_files[key] = line
            rec = self._parse_metadata(meta)
            if rec is None:
                continue
            if rec.name in seen_names:
                raise DataError(f"list file {list_path} names scene '{rec.name}' twice ({seen_names[rec.name]} and "
                                f"{meta}); list each scene once")
            seen_names[rec.name] = meta
            records.append(rec)
        return records

    def _parse_metadata(self, path: Path) -> SceneRecord | None:
        scene = path.stem
        try:
            meta = load_json(path, "metadata file", DataError)
        except DataError as e:  # a FIFO, device, or a file too large or too deeply nested
            self._fail(f"scene '{scene}': {e}")
            return None
        except (OSError, ValueError) as e:
            self._fail(f"scene '{scene}': metadata {path} is not valid JSON ({e.__class__.__name__}); regenerate it")
            return None
        try:
            scene = str(meta.get("scene_name", scene))
            frames = meta["frames"]
            if not isinstance(frames, list) or not frames:
                raise ValueError("'frames' must be a non-empty list")
            fxfycxcy, w2c = _numbers([f["fxfycxcy"] for f in frames]), _numbers([f["w2c"] for f in frames])
            rels = [str(f["image_path"]) for f in frames]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"missing key {e}" if isinstance(e, KeyError) else str(e)
            self._fail(f"scene '{scene}': metadata {path} is malformed ({what}); each frame needs image_path, "
                       f"fxfycxcy [fx, fy, cx, cy] and a 4x4 w2c")
            return None
        if fxfycxcy.shape != (len(frames), 4) or w2c.shape != (len(frames), 4, 4):
            self._fail(f"scene '{scene}': metadata {path} has fxfycxcy of shape {fxfycxcy.shape[1:]} / w2c of shape "
                       f"{w2c.shape[1:]}; expected 4 and 4x4")
            return None
        problem = camera_problem(fxfycxcy, w2c)
        if problem:
            self._fail(f"scene '{scene}': metadata {path}: {problem}; fix the file")
            return None
        first = Path(rels[0])
        bases = [self.split_dir, path.parent, path.parent.parent, Path.cwd()]
        base = next((b for b in bases if (b / first).exists()), None) if not first.is_absolute() else Path("/")
        if base is None:
            self._fail(f"scene '{scene}': image {rels[0]} (from {path}) not found relative to {self.split_dir} or "
                       f"{path.parent}; fix image_path or restore the images")
            return None
        c2w = w2c_to_c2w(torch.from_numpy(w2c)).numpy()
        return SceneRecord(scene, path, [base / r for r in rels], fxfycxcy, c2w)

    def _build_items(self, view_idx_file: str) -> list[tuple[int, tuple[list[int], list[int]] | None]]:
        ok = []
        for i, rec in enumerate(self.scenes):
            if len(rec.image_paths) < self.num_views and not view_idx_file:
                self._fail(f"scene '{rec.name}' ({rec.meta_path}) has {len(rec.image_paths)} frames, fewer than the "
                           f"{self.num_views} views requested (model.num_context_views + model.num_target_views)")
                continue
            ok.append(i)
        if not view_idx_file:
            return [(i, None) for i in ok]
        path = self.split_dir / view_idx_file
        try:
            table = load_json(path, "view index file", DataError)
        except FileNotFoundError:
            raise DataError(f"view index file {path} not found; set data.view_idx_file (relative to "
                            f"{self.split_dir}) or '' to sample views") from None
        except (OSError, ValueError) as e:
            raise DataError(f"view index file {path} is not valid JSON ({e.__class__.__name__}); fix it") from None
        if not isinstance(table, dict):
            raise DataError(f"view index file {path} must map scene -> {{'context': [...], 'target': [...]}} | null")
        items = []
        for i in ok:
            rec = self.scenes[i]
            entry = table.get(rec.name)
            if entry is None:  # null entries (and scenes absent from the index) are not evaluated
                continue
            views = self._check_views(rec, entry, path)
            if views is not None:
                items.append((i, views))
        return items

    def _check_views(self, rec: SceneRecord, entry, path: Path) -> tuple[list[int], list[int]] | None:
        lists = (entry.get("context"), entry.get("target")) if isinstance(entry, dict) else (None, None)
        if not all(isinstance(v, list) for v in lists):
            self._fail(f"scene '{rec.name}': entry in {path} must be {{'context': [ints], 'target': [ints]}}")
            return None
        not_int = [x for x in lists[0] + lists[1] if not _is_index(x)]
        if not_int:
            self._fail(f"scene '{rec.name}': view index {not_int[0]!r} in {path} is not an integer; view indices are "
                       "frame numbers (0, 1, ...)")
            return None
        ctx, tgt = [int(x) for x in lists[0]], [int(x) for x in lists[1]]
        n = len(rec.image_paths)
        bad = [x for x in ctx + tgt if not 0 <= x < n]
        if bad:
            self._fail(f"scene '{rec.name}': view index {bad[0]} in {path} is out of range for its {n} frames")
            return None
        repeated = [x for i, x in enumerate(ctx) if x in ctx[:i]]
        if repeated:  # two identical inputs: the model would see one view where it needs two
            self._fail(f"scene '{rec.name}': context view {repeated[0]} is listed twice in {path}; context views must "
                       "be different frames")
            return None
        if len(ctx) != self.num_context or len(tgt) < self.num_target:
            self._fail(f"scene '{rec.name}': {path} gives {len(ctx)} context / {len(tgt)} target views; the model "
                       f"needs {self.num_context} / {self.num_target} (model.num_context_views/num_target_views)")
            return None
        if len(tgt) > self.num_target:  # keep an evenly spread subset
            tgt = [tgt[int(round(k))] for k in np.linspace(0, len(tgt) - 1, self.num_target)]
        return ctx, tgt

    def _preload(self) -> None:
        """Decode and resize every frame a sample can use (all frames of the indexed scenes; an index file's views
        alone) once into one uint8 array: one buffer, which forked data workers share without copying. A frame that
        fails to read stops it with the loader's message (on_error=raise), or is left out (skip) and fails again, and
        is skipped as usual, when a sample needs it."""
        frames = sorted({(i, f) for i, fixed in self.items
                         for f in (fixed[0] + fixed[1] if fixed else range(len(self.scenes[i].image_paths)))})
        need, free = len(frames) * self.size**2 * 3, available_memory()
        if free is not None and need > 0.8 * free:
            raise DataError(f"data.preload needs {need / 1e9:.2f} GB for the {len(frames)} frames of {self.split_dir} "
                            f"at {self.size}x{self.size}, more than 80% of the {free / 1e9:.2f} GB this machine has "
                            "free; set data.preload=false")
        log.info("%s: preloading %d frames (%.0f MB)", self.split_dir, len(frames), need / 1e6)
        self._pixels = np.empty((len(frames), self.size, self.size, 3), np.uint8)  # (N, S, S, 3)
        self._stored_hw = np.empty((len(frames), 2), np.int64)  # (N, 2) height, width as stored
        for i, f in frames:
            rec = self.scenes[i]
            try:
                img = self._read(rec, rec.image_paths[f], read_rgb)
            except DataError:
                if self.on_error == "raise":
                    raise
                continue
            row = len(self._rows)
            self._pixels[row], self._stored_hw[row] = resize_crop(img, self.size), img.shape[:2]
            self._rows[(i, f)] = row

    def _frame(self, scene: int, f: int) -> tuple[np.ndarray, int, int]:
        """Frame ``f`` of scene ``scene`` -> (S, S, 3) uint8 resized and cropped, height and width as stored."""
        row = self._rows.get((scene, f))
        if row is not None:
            h, w = self._stored_hw[row]
            return self._pixels[row], int(h), int(w)
        rec = self.scenes[scene]
        img = self._read(rec, rec.image_paths[f], read_rgb)  # (H, W, 3) uint8
        return resize_crop(img, self.size), *img.shape[:2]

    # ---------------------------------------------------------------- sampling
    def set_epoch(self, epoch: int) -> None:
        """Pin training view sampling to a pure function of (seed, epoch, index): identical in any worker and after a
        resume, which is what a trainer with a per-epoch permutation sampler wants."""
        self.epoch = int(epoch)
        self._epoch_pinned = True

    def _rng(self, index: int) -> np.random.Generator:
        """Per-draw generator. After :meth:`set_epoch`: from (seed, epoch, index). Otherwise every draw differs: from
        (seed, index, worker seed, draw count), reproducible for a seeded main process (DataLoader derives the worker
        seeds from it) and the same access order."""
        if getattr(self, "_epoch_pinned", False):
            return np.random.default_rng([self.seed, self.epoch, index])
        info = get_worker_info()
        worker_seed = torch.initial_seed() % (1 << 63) if info is not None else 0
        self._draws += 1
        return np.random.default_rng([self.seed, 1 << 32, index, worker_seed, self._draws])

    def sample_views(self, num_frames: int, rng: np.random.Generator | None) -> tuple[list[int], list[int]]:
        """Context + target frame indices. ``rng=None`` -> deterministic evenly spread choice (eval)."""
        v = self.num_views
        if rng is None:
            span = min(num_frames - 1, max(self.gap_max, v - 1))
            ctx = [int(round(x)) for x in np.linspace(0, span, self.num_context)]
            rest = [i for i in range(span + 1) if i not in ctx]
            tgt = [rest[int(round(k))] for k in np.linspace(0, len(rest) - 1, self.num_target)]
            return ctx, tgt
        lo = min(max(self.gap_min, v - 1), num_frames - 1)
        hi = min(max(self.gap_max, lo), num_frames - 1)
        gap = int(rng.integers(lo, hi + 1))
        start = int(rng.integers(0, num_frames - gap))
        if self.num_context == 1:
            ctx = [start + int(rng.integers(0, gap + 1))]
        else:  # the two ends of the window, further context views spread in between
            ctx = [start + int(round(x)) for x in np.linspace(0, gap, self.num_context)]
        pool = np.array([i for i in range(start, start + gap + 1) if i not in ctx])
        tgt = sorted(int(t) for t in rng.choice(pool, size=self.num_target, replace=len(pool) < self.num_target))
        if self.shuffle_targets:  # after the same draws as unshuffled, so the frames are the same
            tgt = [tgt[int(j)] for j in rng.permutation(len(tgt))]
        return ctx, tgt

    # ---------------------------------------------------------------- items
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.items)):
            i = (index + attempt) % len(self.items)
            try:
                return self._load(i)
            except DataError as e:
                if self.on_error == "raise":
                    raise
                self.skipped += 1
                log.warning("skipped sample %d (%d skipped so far in this process): %s", i, self.skipped, e)
        raise DataError(f"every sample of {self.split_dir} failed to load; see the warnings above")

    def _views(self, index: int) -> tuple[SceneRecord, list[int]]:
        scene_idx, fixed = self.items[index]
        rec = self.scenes[scene_idx]
        if fixed is not None:
            ctx, tgt = fixed
        else:
            ctx, tgt = self.sample_views(len(rec.image_paths), self._rng(index) if self.mode == "train" else None)
        return rec, list(ctx) + list(tgt)

    def _read(self, rec: SceneRecord, path: Path, reader):
        try:
            return reader(path)
        except FileNotFoundError:
            raise DataError(f"scene '{rec.name}': file {path} is missing; restore it or regenerate the dataset") \
                from None
        except READ_ERRORS as e:
            raise DataError(f"scene '{rec.name}': cannot read {path} ({e.__class__.__name__}: corrupt or not an "
                            f"image); replace the file or set data.on_error=skip") from None

    def _load(self, index: int) -> dict:
        rec, views = self._views(index)
        scene = self.items[index][0]
        images, intr = [], []
        for f in views:
            img, h, w = self._frame(scene, f)
            images.append(to_chw(img))
            intr.append(adjust_intrinsics(torch.from_numpy(rec.fxfycxcy[f]), h, w, self.size))
        item = {
            "images": torch.stack(images),  # (V, 3, S, S) in [0, 1]
            "fxfycxcy": torch.stack(intr).float(),  # (V, 4) pixels at S x S
            "c2w": torch.from_numpy(rec.c2w[views]).float(),  # (V, 4, 4)
            "frame_idx": torch.tensor(views, dtype=torch.int64),  # (V,)
            "scene": rec.name,
        }
        item.update(self._extras(rec, views))
        return item

    def _extras(self, rec: SceneRecord, views: list[int]) -> dict:
        """Per-dataset extra ground truth (none for static LVSM scenes)."""
        return {}

    def summary(self) -> str:
        frames = sum(len(self.scenes[i].image_paths) for i, _ in self.items)
        return (f"{type(self).__name__}({self.split_dir}, mode={self.mode}): {len(self.items)} items, {frames} frames"
                f"{f', {len(self._rows)} preloaded' if self._rows else ''}"
                f"{f', {self.skipped} skipped' if self.skipped else ''}")
