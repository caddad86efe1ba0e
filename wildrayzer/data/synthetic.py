"""Embedded synthetic benchmark: static and dynamic RealEstate10K-like scenes with full ground truth.

Tree written under ``out`` (all paths inside a split are relative to that split directory)::

    re10k_processed_v2/{train,test}/           static scenes, LVSM layout
        images/<scene>/00000.png                RGB frames
        depth/<scene>/00000.png                 uint16 z-depth in millimetres (OpenCV camera z)
        metadata/<scene>.json                   {"scene_name", "frames": [{"image_path", "fxfycxcy", "w2c"}], ...}
        full_list.txt                           one metadata path per line, relative to this file's directory
        evaluation_index_context_2.json         test only: {scene: {"context": [i, j], "target": [6 indices]}}
    dynamic_re10k/{train,test}/                 dynamic scenes (1-3 moving transients), same layout plus
        clean_images/<scene>/00000.png          same camera, transients removed
        binary_masks/<scene>/00000.png          transient mask, 0 / 255 (255 = moving object)
        depth/<scene>/00000.png                 depth of the visible surface (transients included)
        dre10k_final_context_2.txt (+ _view_idx.json)       test only: metadata list and fixed views
        wildrayzer_final_context_2.txt (+ _view_idx.json)   test only: a second, shorter-baseline selection
    coco/images/*.png, coco/annotations/instances_synthetic.json   copy-paste source (COCO format)
    .complete                                   marker with the generation parameters, written last
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .raycast import camera_rays, cast, shade
from .scenes import TRANSIENT_DISTANCE, TRANSIENT_TRAVEL, SceneSpec, random_scene

FORMAT_VERSION = 1
SCENE_FOLDERS = ("images", "depth", "clean_images", "binary_masks")  # one <scene>/ folder each; the last two dynamic
LIST_FILES = ("full_list.txt", "evaluation_index_context_2.json", "dre10k_final_context_2.txt",
              "dre10k_final_context_2_view_idx.json", "wildrayzer_final_context_2.txt",
              "wildrayzer_final_context_2_view_idx.json")
MARKER = ".complete"
NUM_TARGETS = 6
# Parameters added to SynthParams after FORMAT_VERSION 1, with the value every tree made before them has.
ADDED_PARAMS = {"transient_scale": 1.0}
_SPLIT_CODE = {("static", "train"): 0, ("static", "test"): 1, ("dynamic", "train"): 2, ("dynamic", "test"): 3}


@dataclass(frozen=True)
class SynthParams:
    static_train: int = 32
    static_test: int = 8
    dynamic_train: int = 32
    # 48, not 8 (before v1.0): on 8 scenes the full model's gain over stage 1 has a standard error of 0.30 dB, too
    # coarse for a +0.5 dB goal; scenes 0-7 are the same as before (every scene depends on seed, split and index).
    dynamic_test: int = 48
    frames: int = 24
    res: int = 64
    seed: int = 0
    coco_images: int = 24
    # Metres ahead of the camera where a transient's path starts. 0.6-1.5 m: people walking close to the camera, 10.3 %
    # of the 48 test scenes' context pixels on average (0-33 % per scene); at 1.5-4 m (before v0.6) 7.5 %, too little
    # to cost a good static model more than 0.3 dB (benchmarks/RESULTS.md, v0.6: "The dynamic split now makes transients
    # matter"). Nearer (0.5-1.0 m) they leave the frame sooner and cover no more (v1.2 part 3).
    transient_distance: tuple[float, float] = TRANSIENT_DISTANCE
    # Metres a transient's path covers over the clip (start to end). 1.5-4 m: people walk faster than the camera
    # (which covers 1-4 m); at 0.6-2.2 m (before v0.7) a transient overlapped its own position in the context views,
    # so a static render reproduced it and render-residual pseudo-labels missed it (IoU 0.21 vs 0.36 now with the v0.6
    # stage 1; benchmarks/RESULTS.md, v0.7).
    transient_travel: tuple[float, float] = TRANSIENT_TRAVEL
    # Factor on every transient's size (width, height, depth). At 1.35 they cover 18 % of the 48 test scenes' context
    # pixels instead of 10 % and cost the shipped stage 1 1.09 +- 0.21 dB instead of 0.86, but its pseudo-labels fall
    # from IoU 0.28 to 0.21 (more of each context view's transient is carried into the target renders), so the
    # benchmark keeps 1 (benchmarks/RESULTS.md, v2.5). Trees written before this field existed were made with 1.
    transient_scale: float = 1.0


def render_frame(spec: SceneSpec, frame: int, with_transients: bool = True) -> dict[str, np.ndarray]:
    """Ray-cast one frame -> ``image`` (H, W, 3) float32 in [0, 1], ``clean`` (H, W, 3) without transients,
    ``mask`` (H, W) bool (transient visible), ``depth`` (H, W) float32 z-depth of the visible surface (metres)."""
    h, w = spec.height, spec.width
    o, d = camera_rays(spec.c2w[frame], spec.fxfycxcy, h, w)
    static = spec.static_prims()
    t_s, i_s = cast(static, o, d)
    clean = shade(static, spec.light, o, d, t_s, i_s)
    image, depth = clean.copy(), t_s.copy()
    mask = np.zeros(len(d), dtype=bool)
    moving = spec.transient_prims(frame) if with_transients else []
    if moving:
        t_d, i_d = cast(moving, o, d)
        mask = t_d < t_s
        sel = np.nonzero(mask)[0]
        image[sel] = shade(moving, spec.light, o, d[sel], t_d[sel], i_d[sel])
        depth[sel] = t_d[sel]
    return {"image": image.reshape(h, w, 3), "clean": clean.reshape(h, w, 3), "mask": mask.reshape(h, w),
            "depth": depth.reshape(h, w)}


def scene_rng(seed: int, kind: str, split: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODE[(kind, split)], index, stream])


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _write_png(path: Path, arr: np.ndarray) -> None:
    """arr: (H, W, 3) RGB uint8, (H, W) uint8 or (H, W) uint16."""
    if arr.ndim == 3:
        arr = arr[..., ::-1]  # OpenCV writes BGR
    if not cv2.imwrite(str(path), arr, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"could not write {path}")


def view_selection(rng: np.random.Generator, frames: int, min_gap: int, max_gap: int) -> dict[str, list[int]]:
    """Two context frames ``gap`` apart and NUM_TARGETS targets evenly spread between them."""
    gap = int(rng.integers(min(min_gap, frames - 1), min(max_gap, frames - 1) + 1))
    a = int(rng.integers(0, frames - gap))
    targets = np.round(np.linspace(a, a + gap, NUM_TARGETS + 2)[1:-1]).astype(int)
    return {"context": [a, a + gap], "target": [int(t) for t in targets]}


_WRITERS: dict[int, ThreadPoolExecutor] = {}


def _writer() -> ThreadPoolExecutor:
    """Per-process PNG writer threads (cv2 releases the GIL while encoding, so writing overlaps ray casting)."""
    pid = os.getpid()
    if pid not in _WRITERS:  # a forked worker must not reuse its parent's threads
        _WRITERS[pid] = ThreadPoolExecutor(max_workers=2, thread_name_prefix="synth-png")
    return _WRITERS[pid]


def write_scene(split_dir: Path, name: str, spec: SceneSpec, dynamic: bool, extra: dict) -> None:
    """Render every frame of ``spec`` and write images, GT extras and metadata into ``split_dir``."""
    folders = SCENE_FOLDERS[:2] + (SCENE_FOLDERS[2:] if dynamic else ())
    for f in folders:
        (split_dir / f / name).mkdir(parents=True, exist_ok=True)
    frames, pending = [], []
    pool = _writer()
    for i in range(len(spec.c2w)):
        out = render_frame(spec, i, with_transients=dynamic)
        stem = f"{i:05d}.png"
        files = {"images": _to_u8(out["image"]),
                 "depth": np.clip(np.round(out["depth"] * 1000.0), 0, 65535).astype(np.uint16)}
        if dynamic:
            files["clean_images"] = _to_u8(out["clean"])
            files["binary_masks"] = out["mask"].astype(np.uint8) * 255
        pending += [pool.submit(_write_png, split_dir / folder / name / stem, arr) for folder, arr in files.items()]
        while len(pending) > 32:  # bound the frames held in memory
            pending.pop(0).result()
        frames.append({"image_path": f"images/{name}/{stem}", "fxfycxcy": [float(x) for x in spec.fxfycxcy],
                       "w2c": np.linalg.inv(spec.c2w[i]).tolist()})
    for job in pending:
        job.result()  # re-raises a failed write
    meta = {"scene_name": name, "frames": frames,
            "synthetic": {"trajectory": spec.trajectory, "num_transients": len(spec.transients),
                          "depth_unit_m": 0.001, "world_up": [0.0, 1.0, 0.0], **extra}}
    (split_dir / "metadata" / f"{name}.json").write_text(json.dumps(meta))


def _scene_task(task: tuple) -> tuple[str, int]:
    out_dir, kind, split, index, p = task
    dynamic = kind == "dynamic"
    rng = scene_rng(p.seed, kind, split, index)
    for _ in range(20):  # a dynamic scene must have at least one transient
        spec = random_scene(rng, p.frames, p.res, p.res, dynamic, p.transient_distance, p.transient_travel,
                            p.transient_scale)
        if not dynamic or spec.transients:
            break
    name = f"{kind}_{split}_{index:04d}"
    write_scene(Path(out_dir), name, spec, dynamic,
                {"seed": p.seed, "index": index, "transient_distance": list(p.transient_distance),
                 "transient_travel": list(p.transient_travel),
                 **({"transient_scale": p.transient_scale} if p.transient_scale != 1.0 else {})})  # 1: as before
    return name, p.frames


def _write_lists(split_dir: Path, names: list[str], kind: str, split: str, p: SynthParams) -> None:
    (split_dir / "full_list.txt").write_text("".join(f"metadata/{n}.json\n" for n in names))
    if split != "test":
        return
    if kind == "static":
        idx = {n: view_selection(scene_rng(p.seed, kind, split, i, 1), p.frames, p.frames // 2, p.frames - 1)
               for i, n in enumerate(names)}
        (split_dir / "evaluation_index_context_2.json").write_text(json.dumps(idx, indent=1))
        return
    for prefix, stream, lo, hi in (("dre10k", 1, p.frames // 2, p.frames - 1),
                                   ("wildrayzer", 2, max(2, p.frames // 3), max(2, p.frames // 2))):
        idx = {n: view_selection(scene_rng(p.seed, kind, split, i, stream), p.frames, lo, hi)
               for i, n in enumerate(names)}
        (split_dir / f"{prefix}_final_context_2.txt").write_text("".join(f"metadata/{n}.json\n" for n in names))
        (split_dir / f"{prefix}_final_context_2_view_idx.json").write_text(json.dumps(idx, indent=1))


def _remove_own(split_dir: Path, kind: str, split: str) -> None:
    """Remove what an earlier :func:`generate` wrote into ``split_dir`` (its scenes ``<kind>_<split>_NNNN``, whatever
    their count, and its list files) and nothing else: a list or scene of the user's there stays."""
    own = re.compile(rf"{kind}_{split}_\d{{4,}}")
    for folder in SCENE_FOLDERS:
        for scene in sorted((split_dir / folder).glob(f"{kind}_{split}_*")):
            if own.fullmatch(scene.name) and scene.is_dir() and not scene.is_symlink():
                shutil.rmtree(scene)
    for meta in sorted((split_dir / "metadata").glob(f"{kind}_{split}_*.json")):
        if own.fullmatch(meta.stem) and meta.is_file():
            meta.unlink()
    for name in LIST_FILES:
        (split_dir / name).unlink(missing_ok=True)


def generate(out: str | Path, params: SynthParams = SynthParams(), workers: int = 1, progress: bool = True) -> dict:
    """Write the whole synthetic tree into ``out`` -> summary with timing. Deterministic for ``params.seed``. An
    earlier synthetic tree there is replaced; other files in ``out`` are kept."""
    from .coco_synth import write_synthetic_coco

    if params.frames < NUM_TARGETS + 2 or params.res < 8:
        from ..errors import UserError

        raise UserError(f"synth needs --frames >= {NUM_TARGETS + 2} and --res >= 8 (got {params.frames}, {params.res})")
    out = Path(out)
    (out / MARKER).unlink(missing_ok=True)
    t0 = time.perf_counter()
    tasks, groups = [], []
    for kind, root_name in (("static", "re10k_processed_v2"), ("dynamic", "dynamic_re10k")):
        for split in ("train", "test"):
            count = getattr(params, f"{kind}_{split}")
            split_dir = out / root_name / split
            _remove_own(split_dir, kind, split)
            (split_dir / "metadata").mkdir(parents=True, exist_ok=True)
            groups.append((split_dir, kind, split, [f"{kind}_{split}_{i:04d}" for i in range(count)]))
            tasks += [(str(split_dir), kind, split, i, params) for i in range(count)]
    bar = tqdm(total=len(tasks) * params.frames, unit="frame", desc="synth", disable=not progress)
    if workers > 1:
        # fork (as DataLoader workers do on Linux): children inherit the imported modules instead of re-importing
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            for _, n in pool.imap_unordered(_scene_task, tasks):
                bar.update(n)
    else:
        for task in tasks:
            bar.update(_scene_task(task)[1])
    bar.close()
    for split_dir, kind, split, names in groups:
        _write_lists(split_dir, names, kind, split, params)
    for old in [*(out / "coco/images").glob("synthetic_*.png"), out / "coco/annotations/instances_synthetic.json"]:
        if re.fullmatch(r"synthetic_\d{6}\.png|instances_synthetic\.json", old.name) and old.is_file():
            old.unlink()
    write_synthetic_coco(out / "coco", params.coco_images, params.seed)
    seconds = time.perf_counter() - t0
    summary = {"frames": len(tasks) * params.frames, "scenes": len(tasks), "seconds": round(seconds, 3),
               "frames_per_s": round(len(tasks) * params.frames / max(seconds, 1e-9), 1)}
    marker = {"version": FORMAT_VERSION, "params": asdict(params), **summary}
    (out / MARKER).write_text(json.dumps(marker, indent=1))  # last: a half-written tree has no marker
    return summary


def _read_marker(root: Path) -> dict | None:
    """The completion marker of a synthetic tree, or None (none yet, or unreadable: a half-written tree)."""
    try:
        info = json.loads((root / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def _mismatch(info: dict, params: SynthParams | None) -> str:
    """Why a finished tree (its marker ``info``) is not the one ``params`` describe ("" if it is; None: any params)."""
    if info.get("version") != FORMAT_VERSION:
        return f"made by another generator (format {info.get('version')}, this one writes {FORMAT_VERSION})"
    if params is None:
        return ""
    want, have = json.loads(json.dumps(asdict(params))), info.get("params")  # as JSON: tuples are stored as lists
    if not isinstance(have, dict):
        return "made with unrecorded parameters"
    have = {**ADDED_PARAMS, **have}  # a tree older than a parameter was made with its value of then
    diffs = [f"{k} {have.get(k)} there, {want.get(k)} wanted" for k in {**want, **have} if have.get(k) != want.get(k)]
    return f"made with other parameters ({'; '.join(diffs)})" if diffs else ""


def is_complete(root: str | Path, params: SynthParams | None = None) -> bool:
    info = _read_marker(Path(root))
    return info is not None and not _mismatch(info, params)


def ensure_default_data(root: str | Path = "data/synthetic", params: SynthParams = SynthParams(),
                        progress: bool = False, workers: int | None = None) -> Path:
    """Generate the default synthetic set into ``root`` unless a complete one with these parameters is there.

    Safe against concurrent callers (file lock) and half-written trees (marker written last). A complete set with
    other parameters is not overwritten (runs may be reading it): UserError. ``workers``: processes (default: up to 4
    CPU cores); the output does not depend on it."""
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            info = _read_marker(root)
            if info is None:
                generate(root, params, workers=workers, progress=progress)
            elif why := _mismatch(info, params):
                from ..errors import UserError

                raise UserError(f"{root} holds a synthetic set {why}; it is left as it is: move it away to "
                                "generate the one wanted here")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return root
