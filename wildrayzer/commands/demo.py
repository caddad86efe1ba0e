"""``wildrayzer demo``: a Gradio app. Upload the input photos (or pick an embedded example) and get the predicted
motion masks, the cameras as a small 3D plot and novel views of the static scene on a slider along the path through
the input cameras.

Binds 127.0.0.1 unless ``--host`` is given; uploads are limited in size and must decode as images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

DEFAULT_CHECKPOINT = "checkpoints/wildrayzer_tiny_2view"
MAX_UPLOAD = "10mb"
MAX_PIXELS = 40_000_000


def load_upload(path: str | Path | None):
    """An uploaded file -> RGB PIL image; UserError for anything that is not a decodable image."""
    from PIL import Image, UnidentifiedImageError

    if path is None:
        raise UserError("please upload an image for every input view")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise UserError(f"{Path(path).name}: image too large ({im.width}x{im.height})")
            return im.convert("RGB")
    except Image.DecompressionBombError:
        raise UserError(f"{Path(path).name}: image too large (more than {MAX_PIXELS} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise UserError(f"{Path(path).name} is not an image (PNG, JPEG, ...)") from None


def camera_figure(c2w: torch.Tensor, fxfycxcy: torch.Tensor, size: int):
    """Matplotlib 3D plot of camera frusta. c2w: (V, 4, 4), fxfycxcy: (V, 4) pixels at ``size``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4, 4))
    ax = fig.add_subplot(projection="3d")
    centres = c2w[:, :3, 3].numpy()
    extent = max(float(np.ptp(centres, axis=0).max()), 0.2)
    depth = 0.3 * extent
    for i in range(c2w.shape[0]):
        fx, fy, cx, cy = fxfycxcy[i].tolist()
        corners = np.array([[(u - cx) / fx, (v - cy) / fy, 1.0] for u, v in ((0, 0), (size, 0), (size, size),
                                                                              (0, size))]) * depth
        world = corners @ c2w[i, :3, :3].numpy().T + centres[i]
        for c in world:
            ax.plot(*zip(centres[i], c), color=f"C{i}", lw=1)
        ax.plot(*np.vstack([world, world[:1]]).T, color=f"C{i}", lw=1.5, label=f"view {i}")
    ax.plot(*centres.T, "k--", lw=0.8)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("z")
    ax.legend(loc="upper left", fontsize=7)
    ax.view_init(elev=-60, azim=-90)
    fig.tight_layout()
    return fig


def run_demo_prediction(model, images: list, num_frames: int = 24) -> dict:
    """model: wildrayzer.WildRayZer; images: PIL images -> overlays (uint8 HxWx3 list), figure, novel views."""
    from ..infer.visuals import mask_overlay, to_uint8

    pred = model.predict(images)
    x = pred["images"]
    masks = pred["motion_masks"]
    overlays = [to_uint8(mask_overlay(x[i], masks[i]) if masks is not None else x[i]) for i in range(x.shape[0])]
    views = model.interpolate(pred, num_frames=num_frames)
    return {"overlays": overlays, "figure": camera_figure(pred["cameras"]["c2w"], pred["cameras"]["fxfycxcy"],
                                                          model.image_size),
            "views": [to_uint8(v) for v in views]}


def example_inputs(data_root: str = "data/synthetic") -> list[list[str]]:
    """Context frames of the embedded dynamic test scenes, as example rows for the UI."""
    import json

    test = Path(data_root) / "dynamic_re10k" / "test"
    idx_file = test / "dre10k_final_context_2_view_idx.json"
    if not idx_file.is_file():
        return []
    rows = []
    for scene, sel in sorted(json.loads(idx_file.read_text()).items())[:4]:
        if not sel:
            continue
        paths = [test / "images" / scene / f"{i:05d}.png" for i in sel["context"]]
        if all(p.is_file() for p in paths):
            rows.append([str(p) for p in paths])
    return rows


def build_app(model, examples: list[list[str]] | None = None):
    import gradio as gr

    n = model.num_context_views

    def on_predict(*files):
        try:
            images = [load_upload(f) for f in files]
            res = run_demo_prediction(model, images)
        except UserError as e:
            raise gr.Error(str(e)) from None
        views = res["views"]
        return res["overlays"], res["figure"], views, views[0], gr.update(maximum=len(views) - 1, value=0)

    def on_slide(views, t):
        if not views:
            return None
        return views[int(max(0, min(len(views) - 1, t)))]

    with gr.Blocks(title="WildRayZer demo") as app:
        gr.Markdown(f"## WildRayZer\nUpload {n} photos of one scene (camera and objects may move). The model "
                    "predicts the cameras and the moving objects and renders the static scene along a path "
                    "through the input cameras.")
        with gr.Row():
            inputs = [gr.Image(type="filepath", label=f"input {i}", sources=["upload"]) for i in range(n)]
        run = gr.Button("Run", variant="primary")
        with gr.Row():
            gallery = gr.Gallery(label="predicted motion masks (red)", columns=n, height=260)
            plot = gr.Plot(label="predicted cameras")
        views_state = gr.State([])
        novel = gr.Image(label="novel view (static scene)", type="numpy")
        slider = gr.Slider(0, 23, value=0, step=1, label="position along the camera path")
        if examples:
            gr.Examples(examples=examples, inputs=inputs)
        run.click(on_predict, inputs=inputs, outputs=[gallery, plot, views_state, novel, slider], api_name="predict")
        slider.change(on_slide, inputs=[views_state, slider], outputs=novel, api_name="slide")
    return app


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="wildrayzer demo", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="pretrained dir, weights file or run dir")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: local only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the demo needs Gradio: pip install -e '.[demo]' (or make install-demo)") from None
    from ..api import WildRayZer

    model = WildRayZer.from_pretrained(args.checkpoint, device=args.device)
    app = build_app(model, example_inputs())
    app.queue(max_size=8).launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD,
                                 show_error=True)
    return 0
