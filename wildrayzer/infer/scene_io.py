"""Run the pipeline on one evaluation scene and write its folder atomically (temp folder, then rename).

Every folder written here (the temp folder, then the scene folder it becomes) carries ``SCENE_MARKER``; a folder at
the target name without it was not made by the runner and is never replaced or deleted (see :func:`remove_own`)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch import Tensor

from ..errors import UserError
from ..fileio import has_marker, write_marker
from ..geometry import c2w_to_w2c
from .evaluate import score_scene
from .visuals import error_map, mask_overlay, save_png

SCENE_RECORD = "scene.json"  # written last: its presence marks a finished scene
RUN_KEY = "run_key"  # in the record: checkpoint/data/options it was made with (see run.run_key)
SCENE_MARKER = ".wildrayzer-scene"  # in every scene folder (and temp folder) the runner writes
SCENE_KIND = "wildrayzer-inference-scene"
TMP_PREFIX = ".tmp-"  # <out_root>/.tmp-<scene>: a scene folder being written


def made_by_runner(path: Path) -> bool:
    """``path`` is a real folder carrying the runner's scene marker."""
    return has_marker(path, SCENE_MARKER, SCENE_KIND)


def _empty_temp_dir(path: Path) -> bool:
    """A runner-named temp folder with nothing inside: what a run killed between ``mkdir`` and writing the marker
    leaves (``os.rmdir`` removes only an empty folder, so nothing can be lost)."""
    try:
        return (path.name.startswith(TMP_PREFIX) and not path.is_symlink() and path.is_dir()
                and not any(path.iterdir()))
    except OSError:
        return False


def check_replaceable(path: Path) -> None:
    """UserError when ``path`` exists and the runner cannot prove it wrote it (no ``SCENE_MARKER`` inside)."""
    if (path.exists() or path.is_symlink()) and not made_by_runner(path) and not _empty_temp_dir(path):
        raise UserError(f"{path} already exists and was not written by WildRayZer (no {SCENE_MARKER} marker inside); "
                        "inference never replaces it: move it away or use a new or empty inference_out_root")


def remove_own(path: Path) -> None:
    """Delete ``path`` if the runner wrote it; a foreign folder is a UserError and stays as it is."""
    check_replaceable(path)
    if made_by_runner(path):
        shutil.rmtree(path)
    elif _empty_temp_dir(path):
        os.rmdir(path)


def cameras_json(scene: str, frame_idx: list[int], num_context: int, c2w: Tensor, fxfycxcy: Tensor) -> dict:
    """Predicted cameras in the LVSM metadata layout. c2w: (V, 4, 4) relative to view 0, fxfycxcy: (V, 4) pixels."""
    w2c = c2w_to_w2c(c2w.double())
    frames = [{"frame_idx": int(f), "role": "context" if i < num_context else "target",
               "fxfycxcy": [float(x) for x in fxfycxcy[i]], "c2w": c2w[i].double().tolist(), "w2c": w2c[i].tolist()}
              for i, f in enumerate(frame_idx)]
    return {"scene_name": scene, "convention": "OpenCV c2w/w2c relative to context view 0; fxfycxcy in pixels",
            "frames": frames}


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def write_scene(pipe, item: dict, out_root: Path, dirname: str, cfg, lpips_model=None, run_key=None) -> dict:
    """Predict, score and write one scene. item: a dataset sample (see docs/CONTRACTS.md). Returns its record."""
    vc = pipe.num_context
    out, metrics = score_scene(pipe, item, lpips_model)
    h, w = item["images"].shape[-2:]
    renders = out["renders"][0].float().cpu().clamp(0, 1)  # (Vt, 3, H, W)
    imgs = item["images"].float()
    targets = imgs[vc:]
    probs = out["motion_probs"][0].cpu() if out["motion_probs"] is not None else None  # (Vc, 1, H, W)
    gt_masks = item.get("motion_masks")
    clean = item.get("clean_images")
    c2w, k = out["cameras"]["c2w"][0].cpu(), out["cameras"]["fxfycxcy"][0].cpu()

    final = out_root / dirname
    tmp = out_root / f"{TMP_PREFIX}{dirname}"
    check_replaceable(final)  # before anything is written
    remove_own(tmp)
    tmp.mkdir()
    write_marker(tmp, SCENE_MARKER, SCENE_KIND)  # first: a killed run's temp folder is recognisably the runner's
    rec_inputs, rec_targets, rec_plucker = [], [], []
    for i in range(vc):
        entry = {"label": f"input {i}", "image": save_png(tmp / f"input_{i:02d}.png", imgs[i])}
        if probs is not None:
            entry["mask"] = save_png(tmp / f"input_{i:02d}_mask.png", (probs[i, 0] >= 0.5).float())
            entry["overlay"] = save_png(tmp / f"input_{i:02d}_overlay.png", mask_overlay(imgs[i], probs[i]))
        if gt_masks is not None:
            entry["gt_overlay"] = save_png(tmp / f"input_{i:02d}_gt_overlay.png", mask_overlay(imgs[i], gt_masks[i],
                                                                                          color=(0.0, 0.8, 0.2)))
        rec_inputs.append(entry)
    for j in range(renders.shape[0]):
        entry = {"label": f"target {j}", "render": save_png(tmp / f"render_{j:02d}.png", renders[j]),
                 "gt": save_png(tmp / f"gt_{j:02d}.png", targets[j]),
                 "error": save_png(tmp / f"error_{j:02d}.png", error_map(renders[j], targets[j]))}
        if clean is not None:
            entry["clean"] = save_png(tmp / f"clean_{j:02d}.png", clean[vc + j])
        rec_targets.append(entry)
    if cfg.inference.save_plucker_vis:
        from .plucker_vis import save_camera_plucker_vis

        for j in range(renders.shape[0]):
            paths = save_camera_plucker_vis(tmp, c2w[vc + j], k[vc + j], h, w, f"target_{j:02d}",
                                            stride=cfg.inference.plucker_vis_stride,
                                            include_quiver=cfg.inference.plucker_vis_include_quiver)
            rec_plucker.append({"label": f"target {j}", **paths})
    video = None
    if cfg.inference.render_video:
        from .video import camera_path, video_path, write_video

        # The looping path is the forward path and its mirror; views render independently, so the return half
        # reuses the forward frames instead of rendering them again (half the video cost).
        path_c2w, path_k = camera_path(c2w[:vc], k[:vc], cfg.inference.video_frames)
        frames = pipe.render(out["scene_tokens"], path_c2w[None], path_k[None])[0].cpu()
        frames = torch.cat([frames, frames.flip(0)[1:-1]], dim=0)
        video = write_video(video_path(tmp, "video", cfg.inference.video_format), frames)
    frame_idx = [int(x) for x in item["frame_idx"]]
    (tmp / "cameras.json").write_text(json.dumps(cameras_json(item["scene"], frame_idx, vc, c2w, k), indent=1))
    (tmp / "metrics.json").write_text(json.dumps({"scene": item["scene"], **metrics}, indent=1))

    def fix(entry: dict) -> dict:  # temp-folder paths -> paths relative to out_root in the final folder
        return {key: (_rel(final / Path(v).name, out_root) if isinstance(v, Path) else v) for key, v in entry.items()}

    record = {"name": item["scene"], "dir": dirname, "metrics": metrics,
              "inputs": [fix(e) for e in rec_inputs], "targets": [fix(e) for e in rec_targets],
              "plucker": [fix(e) for e in rec_plucker],
              "video": _rel(final / video.name, out_root) if video is not None else None,
              "files": {"cameras.json": f"{dirname}/cameras.json", "metrics.json": f"{dirname}/metrics.json"}}
    (tmp / SCENE_RECORD).write_text(json.dumps({**record, RUN_KEY: run_key}, indent=1))
    remove_own(final)
    os.replace(tmp, final)
    return record

