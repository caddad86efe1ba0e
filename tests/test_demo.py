"""Gradio demo: upload checks, camera plot, prediction outputs, the missing-Gradio message and (slow) the real app
driven by gradio_client."""

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_api import make_tiny_checkpoint

from wildrayzer.commands.demo import camera_figure, load_upload, run_demo_prediction
from wildrayzer.errors import UserError

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _has_gradio() -> bool:
    try:
        import gradio  # noqa: F401
        import gradio_client  # noqa: F401
    except ImportError:
        return False
    return True


def write_png(path: Path, size=(50, 37), mode="RGB", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode=mode).save(path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("demo") / "tiny", REPO)


def test_load_upload_accepts_images_and_rejects_the_rest(tmp_path):
    im = load_upload(write_png(tmp_path / "a.png", mode="RGBA"))
    assert im.mode == "RGB" and im.size == (50, 37)
    assert load_upload(str(write_png(tmp_path / "g.png", mode="L"))).mode == "RGB"
    (tmp_path / "notes.txt").write_text("not an image at all\n")
    (tmp_path / "empty.png").write_bytes(b"")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(write_png(tmp_path / "full.png", size=(64, 64)).read_bytes()[:200])
    for bad in ("notes.txt", "empty.png", "cut.png"):
        with pytest.raises(UserError, match=f"{bad} is not an image"):
            load_upload(tmp_path / bad)
    with pytest.raises(UserError, match="upload an image"):
        load_upload(None)


def test_load_upload_rejects_huge_images_with_a_message(tmp_path, monkeypatch):
    import wildrayzer.commands.demo as demo

    path = write_png(tmp_path / "big.png", size=(50, 40))
    monkeypatch.setattr(demo, "MAX_PIXELS", 1000)
    with pytest.raises(UserError, match="big.png: image too large"):
        load_upload(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # PIL's own decompression-bomb guard (> 2x raises)
    with pytest.raises(UserError, match="big.png: image too large"):
        load_upload(path)


def test_camera_figure_draws_one_frustum_per_view():
    from matplotlib.figure import Figure

    from wildrayzer.geometry import make_pose, rotation_6d_to_matrix

    c2w = torch.stack([torch.eye(4), make_pose(rotation_6d_to_matrix(torch.tensor([1.0, 0.1, 0, 0, 1, 0])),
                                               torch.tensor([0.5, 0.0, 0.1]))])
    fig = camera_figure(c2w, torch.tensor([[40.0, 40, 16, 16]] * 2), 32)
    try:
        assert isinstance(fig, Figure)
        ax = fig.axes[0]
        assert ax.name == "3d"
        # per view 4 frustum edges + the outline, plus the dashed path through the centres
        assert len(ax.lines) == 2 * 5 + 1
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["view 0", "view 1"]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_run_demo_prediction_outputs(ckpt, tmp_path):
    import matplotlib.pyplot as plt

    from wildrayzer import WildRayZer

    model = WildRayZer.from_pretrained(ckpt, device="cpu")
    images = [load_upload(write_png(tmp_path / f"{i}.png", size=(50 + 7 * i, 37), seed=i)) for i in range(2)]
    res = run_demo_prediction(model, images, num_frames=5)
    assert len(res["overlays"]) == 2 and len(res["views"]) == 5
    assert all(o.shape == (32, 32, 3) and o.dtype == np.uint8 for o in res["overlays"] + res["views"])
    assert len(res["figure"].axes[0].lines) == 11
    plt.close(res["figure"])
    with pytest.raises(UserError, match="takes 2 input views; got 1"):
        run_demo_prediction(model, images[:1])


def test_demo_without_gradio_exits_2_with_install_hint(monkeypatch, tmp_path):
    from wildrayzer.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["demo", "--checkpoint", str(tmp_path / "nope")])
    assert rc == 2 and err.getvalue().count("\n") == 1
    assert "pip install -e '.[demo]'" in err.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"demo exited early:\n{proc.stdout.read()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError("demo did not start listening")


@pytest.mark.slow
@pytest.mark.skipif(not _has_gradio(), reason="gradio / gradio_client not installed (pip install -e '.[demo]')")
def test_real_app_with_gradio_client(ckpt, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    proc = subprocess.Popen([sys.executable, "-m", "wildrayzer.cli", "demo", "--checkpoint", str(ckpt), "--port",
                             str(port), "--device", "cpu"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_port(port, proc)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert {"/predict", "/slide"} <= set(client.view_api(return_format="dict")["named_endpoints"])
        a, b = write_png(tmp_path / "a.png", seed=1), write_png(tmp_path / "b.png", size=(64, 48), seed=2)
        gallery, plot, novel, slider = client.predict(handle_file(str(a)), handle_file(str(b)), api_name="/predict")
        assert len(gallery) == 2 and all(Path(g["image"]).is_file() for g in gallery)
        assert plot["type"] == "matplotlib" and plot["plot"].startswith("data:image/")
        assert Image.open(novel).size == (32, 32)
        assert slider["maximum"] == 23 and slider["value"] == 0  # 24 views along the path
        # a non-image upload is reported to the client as an error; the server keeps serving
        bad = tmp_path / "notes.txt"
        bad.write_text("not an image")
        with pytest.raises(AppError, match="(?i)image"):
            client.predict(handle_file(str(bad)), handle_file(str(b)), api_name="/predict")
        with pytest.raises(AppError, match="upload an image for every input view"):  # our own message
            client.predict(None, handle_file(str(b)), api_name="/predict")
        assert proc.poll() is None
        again = client.predict(handle_file(str(b)), handle_file(str(a)), api_name="/predict")
        assert len(again[0]) == 2
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
