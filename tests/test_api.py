"""Python API: from_pretrained (local dir, hub id from the offline cache), predict on any image type/size, render,
interpolate, and the errors a user can hit."""

import numpy as np
import pytest
import torch
from PIL import Image

from wildrayzer import WildRayZer
from wildrayzer.api import prepare_images
from wildrayzer.errors import CheckpointError, UserError

RES = 32
# Tiny architecture shared by the inference tests (the model of configs/tiny/wildrayzer_inference.yaml, shrunk).
TINY = [f"model.image_size={RES}", "model.patch_size=8", "model.dim=64", "model.heads=2", "model.camera_layers=1",
        "model.scene_layers=1", "model.renderer_layers=1", "model.motion_layers=1", "model.num_latents=16",
        "semantic.feature_size=4"]
CONFIG = "configs/tiny/wildrayzer_inference.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


def make_tiny_checkpoint(out_dir, repo, extra=(), seed=0):
    """A randomly initialised tiny 2-view model saved with save_pretrained -> out_dir.

    The camera heads start at zero (an untrained model predicts identity cameras for every view), which would make
    camera tests vacuous, so their last layers get random weights: cameras then differ per view (std 0.5; with 0.05
    a view's rotation stayed within 1e-3 of identity for some initialisations, e.g. with the shift cue's MLP built)."""
    from wildrayzer.config import load_config
    from wildrayzer.model import WildRayZerModel as Net
    from wildrayzer.semantic import build_semantic_backbone
    from wildrayzer.weights import save_pretrained

    cfg = load_config(repo / CONFIG, TINY + list(extra))
    dim = build_semantic_backbone(cfg.semantic).out_dim
    torch.manual_seed(seed)
    net = Net(cfg.model, semantic_dim=dim)
    for head in (net.camera.pose_head, net.camera.focal_head):
        torch.nn.init.normal_(head[-1].weight, std=0.5)
    return save_pretrained(net, cfg, out_dir, semantic_dim=dim)


def test_images(seed=0):
    """Two views of different types and odd sizes: RGBA PIL 50x37 and greyscale uint8 numpy 37x50."""
    rng = np.random.default_rng(seed)
    rgba = Image.fromarray(rng.integers(0, 256, (37, 50, 4), dtype=np.uint8), mode="RGBA")
    grey = rng.integers(0, 256, (50, 37), dtype=np.uint8)
    return [rgba, grey]


test_images.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from pathlib import Path

    return make_tiny_checkpoint(tmp_path_factory.mktemp("api") / "tiny", Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def model(ckpt):
    return WildRayZer.from_pretrained(ckpt, device="cpu")


def test_from_pretrained_local_dir_uses_stored_config(model):
    assert model.num_context_views == 2 and model.image_size == RES
    assert model.config.model.dim == 64 and not model.pipeline.model.training


def test_predict_any_image_type_and_size(model):
    out = model.predict(test_images())
    c2w, k = out["cameras"]["c2w"], out["cameras"]["fxfycxcy"]
    assert c2w.shape == (2, 4, 4) and k.shape == (2, 4)
    assert torch.allclose(c2w[0], torch.eye(4), atol=1e-6)
    assert not torch.allclose(c2w[1], torch.eye(4), atol=1e-3)  # a real prediction, not the untrained identity
    assert torch.allclose(c2w[1, :3, :3] @ c2w[1, :3, :3].T, torch.eye(3), atol=1e-4)
    assert torch.allclose(k[:, 2:], torch.full((2, 2), RES / 2))
    m = out["motion_masks"]
    assert m.shape == (2, 1, RES, RES) and m.min() >= 0 and m.max() <= 1
    assert out["images"].shape == (2, 3, RES, RES)
    # grey input became three equal channels
    assert torch.equal(out["images"][1, 0], out["images"][1, 2])


def test_pil_numpy_and_tensor_inputs_give_the_same_prediction(model):
    rng = np.random.default_rng(1)
    arrs = [rng.integers(0, 256, (41, 29, 3), dtype=np.uint8) for _ in range(2)]
    as_pil = model.predict([Image.fromarray(a) for a in arrs])
    as_np = model.predict(arrs)
    as_float = model.predict([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrs])
    as_u8_tensor = model.predict([torch.from_numpy(a).permute(2, 0, 1) for a in arrs])
    as_batch = model.predict(torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2))  # one (V, C, H, W) tensor
    for other in (as_np, as_float, as_u8_tensor, as_batch):
        assert torch.allclose(other["images"], as_pil["images"], atol=1e-6)
        assert torch.allclose(other["cameras"]["c2w"], as_pil["cameras"]["c2w"], atol=1e-5)
        assert torch.allclose(other["motion_masks"], as_pil["motion_masks"], atol=1e-5)


def test_prepare_images_centre_crops_then_resizes():
    img = torch.zeros(3, 20, 40)
    img[:, :, 10:30] = 1.0  # the centre square is white, the sides black
    out = prepare_images([img], 8)
    assert out.shape == (1, 3, 8, 8) and torch.allclose(out, torch.ones_like(out))
    dark = torch.full((3, 9, 9), 1, dtype=torch.uint8)  # uint8 values are /255 even when all are small
    assert prepare_images([dark], 9).max() == pytest.approx(1 / 255)
    assert prepare_images([np.full((9, 9), 65535, np.uint16)], 9).min() == pytest.approx(1.0)  # 16-bit grey


def test_wrong_view_count_or_input_is_a_user_error(model):
    with pytest.raises(UserError, match="takes 2 input views; got 3"):
        model.predict(test_images() + [np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(UserError, match="list of images"):
        model.predict("photo.png")
    with pytest.raises(UserError, match="C in 1, 3, 4"):
        model.predict([np.zeros((8, 8, 2), np.uint8)] * 2)


def test_render_matches_pipeline_and_interpolate(model):
    pred = model.predict(test_images())
    c2w, k = pred["cameras"]["c2w"], pred["cameras"]["fxfycxcy"]
    views = model.render(pred, c2w, k)
    assert views.shape == (2, 3, RES, RES) and views.min() >= 0 and views.max() <= 1
    direct = model.pipeline.render(pred["scene_tokens"], c2w[None, :1], k[None, :1])[0]
    single = model.render(pred, c2w[0], k[0])  # one (4, 4) camera is accepted too
    assert torch.allclose(single, direct, atol=1e-6) and torch.allclose(views[:1], direct, atol=1e-5)
    assert not torch.allclose(views[0], views[1], atol=1e-4)  # different cameras, different views
    frames = model.interpolate(pred, 5)
    assert frames.shape == (5, 3, RES, RES)
    assert torch.allclose(frames[0], views[0], atol=1e-4) and torch.allclose(frames[-1], views[1], atol=1e-4)


def _point_hf_cache(monkeypatch, home):
    """HF_HOME=home for this process (the constants are read at import time, so patch them too)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_hub_id_not_in_cache_names_the_download_command(tmp_path, monkeypatch):
    _point_hf_cache(monkeypatch, tmp_path / "hf")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="huggingface-cli download owner/name"):
        WildRayZer.from_pretrained("owner/name")
    with pytest.raises(CheckpointError, match="not found"):
        WildRayZer.from_pretrained(tmp_path / "no_such_dir")


def test_hub_id_in_local_cache_loads(tmp_path, monkeypatch, ckpt):
    home = tmp_path / "hf"
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = home / "hub" / "models--owner--name"
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    for f in ("model.safetensors", "config.yaml"):
        (snap / f).write_bytes((ckpt / f).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    _point_hf_cache(monkeypatch, home)
    monkeypatch.chdir(tmp_path)
    m = WildRayZer.from_pretrained("owner/name", device="cpu")
    assert m.pipeline.path.parent.name == rev and m.num_context_views == 2
    out = m.predict(test_images())
    assert out["cameras"]["c2w"].shape == (2, 4, 4)
