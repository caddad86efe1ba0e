"""Novel-view videos (``inference.render_video``): the smooth camera path and GIF/MP4 writing.

The path runs through the predicted input cameras in order (SLERP rotations, linear centres and intrinsics, via
:func:`wildrayzer.geometry.interpolate_c2w`); the caller renders it with ``model.render`` and writes the frames here.
GIFs are written by imageio's Pillow plugin, MP4s (H.264, yuv420p) by imageio-ffmpeg; odd frame sizes are padded by
one edge pixel because yuv420p needs even sizes. Note that Pillow merges consecutive identical GIF frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from wildrayzer.geometry import interpolate_c2w
from wildrayzer.infer.visuals import to_uint8

VIDEO_FORMATS = ("gif", "mp4")


def camera_path(c2w: Tensor, fxfycxcy: Tensor, num_frames: int, loop: bool = False) -> tuple[Tensor, Tensor]:
    """Smooth trajectory through the cameras. c2w: (V, 4, 4), fxfycxcy: (V, 4) -> (T, 4, 4), (T, 4).

    T = ``num_frames``; frame 0 is camera 0 and frame ``num_frames - 1`` the last camera. With ``loop`` the path
    then returns to camera 0 (ping-pong; T = 2 * num_frames - 2) so the video can repeat seamlessly.
    """
    if c2w.dim() != 3 or c2w.shape[-2:] != (4, 4) or fxfycxcy.shape != (c2w.shape[0], 4):
        raise ValueError(f"camera_path: expected c2w (V, 4, 4) and fxfycxcy (V, 4), got {tuple(c2w.shape)} and "
                         f"{tuple(fxfycxcy.shape)}")
    if num_frames < 2:
        raise ValueError(f"camera_path: num_frames must be >= 2, got {num_frames}")
    path = interpolate_c2w(c2w.detach().double(), num_frames)
    v = c2w.shape[0]
    s = torch.linspace(0, v - 1, num_frames, dtype=torch.float64)
    k = fxfycxcy.detach().double()
    lo = s.floor().long().clamp(max=max(v - 2, 0))
    t = (s - lo)[:, None]
    intr = k[lo] * (1 - t) + k[(lo + 1).clamp(max=v - 1)] * t if v > 1 else k.expand(num_frames, 4)
    if loop:
        path = torch.cat([path, path.flip(0)[1:-1]], dim=0)
        intr = torch.cat([intr, intr.flip(0)[1:-1]], dim=0)
    return path.to(c2w.dtype), intr.to(fxfycxcy.dtype)


def _frames_uint8(frames: Tensor) -> np.ndarray:
    """frames: (T, 3, H, W) in [0, 1] -> (T, H, W, 3) uint8."""
    if frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"video frames must be (T, 3, H, W) with T >= 1, got {tuple(frames.shape)}")
    return np.stack([to_uint8(f) for f in frames.detach().cpu()])


def write_video(path: str | Path, frames: Tensor, fps: float = 12.0) -> Path:
    """Write frames (T, 3, H, W) in [0, 1] as GIF or MP4, chosen by the suffix of ``path``. Returns the path."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in VIDEO_FORMATS:
        raise ValueError(f"write_video: unsupported format {path.suffix!r}; use one of {VIDEO_FORMATS}")
    arr = _frames_uint8(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "gif":
        import imageio.v3 as iio

        iio.imwrite(path, arr, extension=".gif", plugin="pillow", duration=int(round(1000.0 / fps)), loop=0)
    else:
        import imageio.v2 as imageio

        pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2
        if pad_h or pad_w:
            arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        with imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
                                macro_block_size=1, quality=8, ffmpeg_log_level="error") as writer:
            for frame in arr:
                writer.append_data(frame)
    return path


def video_path(out_dir: str | Path, stem: str, video_format: str) -> Path:
    """``out_dir/<stem>.<gif|mp4>`` for ``inference.video_format``."""
    if video_format not in VIDEO_FORMATS:
        raise ValueError(f"inference.video_format must be one of {VIDEO_FORMATS}, got {video_format!r}")
    return Path(out_dir) / f"{stem}.{video_format}"
