"""The authors' released checkpoint: key layout, conversion (file and in memory), parity with the release's outputs,
safe loading, and on-the-fly conversion from ``inference.model_path``."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from wildrayzer.cli import main as cli
from wildrayzer.config import load_config
from wildrayzer.errors import CheckpointError
from wildrayzer.model import WildRayZerModel
from wildrayzer.official.convert import convert_official, read_official_state
from wildrayzer.official.keys import convert_state, infer_model_config
from wildrayzer.official.parity import regenerate_state, run_parity

REPO = Path(__file__).resolve().parents[1]
FIXTURES = sorted(p for p in (REPO / "tests/fixtures/parity").iterdir() if (p / "spec.json").is_file())
TINY = REPO / "tests/fixtures/parity/official_tiny"


def release_layout(d, dh, enc, geom, dec, latents, patch, sem, motion=4, mdh=None, noise=True) -> dict:
    """Key names and shapes of the release's ``Images2Latent4D.state_dict()``, written down from its structure
    (an oracle independent of this package's mapping; checked against the fixture's spec below)."""
    mdh = mdh or dh
    keys = {"scene_code": (latents, d), "cam_code": (1, d)}
    if noise:
        keys["noise_token"] = (1, 1, d)
    keys["image_tokenizer.1.weight"] = (d, 3 * patch * patch)
    for mlp in ("pe_embedder", "temporal_pe_embedder"):
        keys.update({f"{mlp}.0.weight": (d, d), f"{mlp}.0.bias": (d,), f"{mlp}.2.weight": (d, d),
                     f"{mlp}.2.bias": (d,)})

    def blocks(prefix, n, head_dim):
        for i in range(n):
            keys.update({f"{prefix}.{i}.norm1.weight": (d,), f"{prefix}.{i}.attn.to_qkv.weight": (3 * d, d),
                         f"{prefix}.{i}.attn.fc.weight": (d, d), f"{prefix}.{i}.attn.q_norm.weight": (head_dim,),
                         f"{prefix}.{i}.attn.k_norm.weight": (head_dim,), f"{prefix}.{i}.norm2.weight": (d,),
                         f"{prefix}.{i}.mlp.mlp.0.weight": (4 * d, d), f"{prefix}.{i}.mlp.mlp.2.weight": (d, 4 * d)})

    def linear(name, o, i):
        keys.update({f"{name}.weight": (o, i), f"{name}.bias": (o,)})

    blocks("transformer_encoder", enc, dh)
    blocks("transformer_encoder_geom", geom, dh)
    keys["decoder_ln.weight"] = (d,)
    blocks("transformer_decoder", dec, dh)
    linear("pose_predictor.rel_head.0", d, 2 * d)
    linear("pose_predictor.rel_head.2", 9, d)
    linear("pose_predictor.canonical_k_head.0", d, d)
    linear("pose_predictor.canonical_k_head.2", 1, d)
    keys["target_pose_tokenizer.1.weight"] = (d, 6 * patch * patch)
    keys["target_pose_tokenizer2.1.weight"] = (d, 6 * patch * patch)
    keys["mlp_fuse.0.weight"] = (2 * d,)
    linear("mlp_fuse.1", d, 2 * d)
    linear("mlp_fuse.3", d, d)
    keys["image_token_decoder.0.weight"] = (d,)
    keys["image_token_decoder.1.weight"] = (3 * patch * patch, d)
    mm = "motion_mask_predictor"
    keys[f"{mm}.dino_norm_mean"] = keys[f"{mm}.dino_norm_std"] = (1, 3, 1, 1)
    for name, width in (("dino_proj", sem), ("token_proj", d), ("pose_proj", d)):
        keys[f"{mm}.{name}.0.weight"] = (width,)
        linear(f"{mm}.{name}.1", d, width)
    keys[f"{mm}.fusion_mlp.0.weight"] = (3 * d,)
    linear(f"{mm}.fusion_mlp.1", d, 3 * d)
    linear(f"{mm}.fusion_mlp.3", d, d)
    blocks(f"{mm}.motion_transformer", motion, mdh)
    keys[f"{mm}.dpt_readout.0.weight"] = (d,)
    linear(f"{mm}.dpt_readout.1", d, d)

    def conv(name, o, i, k):
        keys.update({f"{name}.weight": (o, i, k, k), f"{name}.bias": (o,)})

    def norm(name, c):
        keys.update({f"{name}.weight": (c,), f"{name}.bias": (c,)})

    c = [d // 2 ** (k + 1) for k in range(5)]
    conv(f"{mm}.scale1_refine.0", c[0], d, 3)
    norm(f"{mm}.scale1_refine.1", c[0])
    conv(f"{mm}.scale1_refine.3", c[0], c[0], 3)
    for k in range(1, 5):
        conv(f"{mm}.up{k + 1}.conv_up", c[k], c[k - 1], 1)
        norm(f"{mm}.up{k + 1}.refine.0", c[k])
        conv(f"{mm}.up{k + 1}.refine.2", c[k], c[k], 3)
        norm(f"{mm}.up{k + 1}.refine.3", c[k])
    for k in range(1, 5):
        conv(f"{mm}.scale{k + 1}_refine.0", c[k], c[k], 3)
        norm(f"{mm}.scale{k + 1}_refine.1", c[k])
    conv(f"{mm}.head.0", c[4], c[4], 3)
    conv(f"{mm}.head.2", 1, c[4], 1)
    return keys


def random_state(layout: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * 0.02 for k, shape in layout.items()}


@pytest.mark.skipif(TINY is None, reason="no parity fixture")
def test_release_layout_oracle_matches_the_fixture_spec():
    spec = json.loads((TINY / "spec.json").read_text())
    layout = release_layout(768, 64, 1, 1, 1, 16, 16, 64)
    assert {e["name"]: tuple(e["shape"]) for e in spec["keys"]} == layout


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.name for p in FIXTURES])
def test_parity_with_the_release(fixture, capsys):
    """The published verdict: every output within 1e-4 of the authors' code, no token mask differs."""
    assert cli(["parity", "official", str(fixture)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["max_abs"]) == {"render", "render_input", "c2w", "fxfycxcy", "predicted_input_masks",
                                      "predicted_target_masks"}
    assert max(result["max_abs"].values()) <= 1e-4 and result["token_mask_mismatches"] == 0


@pytest.mark.skipif(TINY is None, reason="no parity fixture")
@pytest.mark.parametrize("flip", ["sincos_order", "pose_head_order", "token_rule"])
def test_parity_fails_when_a_release_fact_is_flipped(flip, monkeypatch):
    """The check can fail: one wrong detail of the release's computation is caught."""
    import wildrayzer.model.camera as camera
    import wildrayzer.model.tokenizer as tokenizer
    import wildrayzer.model.wildrayzer as root

    if flip == "sincos_order":  # rows before columns in the 2-D position embedding
        orig = tokenizer.sincos_2d
        monkeypatch.setattr(tokenizer, "sincos_2d", lambda d, h, w, device=None: orig(d, h, w, device).roll(
            d // 2, dims=-1))
    elif flip == "pose_head_order":  # [view | canonical] instead of [canonical | view]
        orig_cat = torch.cat

        def swapped(tensors, dim=0, **kw):
            if dim == -1 and len(tensors) == 2 and tensors[0].shape == tensors[1].shape:
                tensors = (tensors[1], tensors[0])
            return orig_cat(tensors, dim=dim, **kw)

        monkeypatch.setattr(camera.torch, "cat", swapped)
    else:  # decide on binarised pixels instead of pooled probabilities
        monkeypatch.setattr(root.WildRayZerModel, "token_mask_from_probs",
                            lambda self, p, grid=None, threshold=None: (torch.nn.functional.adaptive_avg_pool2d(
                                (p.flatten(0, 1) > 0.5).float(), (p.shape[-2] // self.patch,) * 2) > 0.1
                                             ).reshape(p.shape[0], p.shape[1], -1))
    result = run_parity(TINY)
    worst = max(result["max_abs"].values())
    assert worst > 1e-3 or result["token_mask_mismatches"] > 0, result


def test_paper_config_is_filled_completely_by_a_release_layout_checkpoint():
    """The paper configs at reduced depth: every weight comes from the release keys; only the noise token (which the
    release does not save) is filled, and it is reported; the loss weights are dropped and counted."""
    cfg = load_config(REPO / "configs/wildrayzer_inference.yaml",
                      ["model.camera_layers=1", "model.scene_layers=1", "model.renderer_layers=1",
                       "model.motion_layers=1", "model.num_latents=32"])
    layout = release_layout(768, 64, 1, 1, 1, 32, 16, 96, motion=1, noise=False)
    state = random_state(layout)
    state["loss_computer.perceptual.weight"] = torch.zeros(3)
    sizes = infer_model_config(state)
    assert {k: cfg.model[k] for k in sizes} == sizes  # the paper config is the release's structure
    model = WildRayZerModel(cfg.model, semantic_dim=96)
    ours, report = convert_state(state, model.state_dict())
    assert report["filled"] == ["noise_token"] and report["dropped"] == {
        "training-loss weights": 1, "DINOv3 input normalisation (the semantic backbone applies it)": 2}
    assert set(ours) == set(model.state_dict())
    mapped = [k for k in layout if not k.startswith("motion_mask_predictor.dino_norm")]
    assert len(ours) - 1 == len(mapped)  # one to one
    values = {round(float(v.double().sum()), 4) for v in ours.values()}
    assert len(values) > 0.9 * len(ours)  # distinct tensors landed in distinct places, none zero-filled
    model.load_state_dict(ours, strict=True)


def _release_file(tmp_path, state, **extra) -> Path:
    path = tmp_path / "wildrayzer_2view.pt"
    torch.save({"model": state, "optimizer": {"state": {}}, "lr_scheduler": {"last_epoch": 3},
                "fwdbwd_pass_step": 7, "param_update_step": 7, **extra}, path)
    return path


@pytest.fixture(scope="module")
def fixture_state():
    if TINY is None:
        pytest.skip("no parity fixture")
    return regenerate_state(json.loads((TINY / "spec.json").read_text()))


def _tiny_dinov3(path, width=64):
    """A DINOv3 ViT/16 with the fixture's feature width, saved like a downloaded one (no network)."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    cfg = DINOv3ViTConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1, num_attention_heads=2,
                          patch_size=16, num_register_tokens=4, image_size=64)
    model = DINOv3ViTModel(cfg).eval()
    model.save_pretrained(path)
    return model


def test_convert_cli_writes_a_loadable_pretrained_dir(tmp_path, fixture_state, capsys):
    from wildrayzer import WildRayZer as Api

    state = dict(fixture_state)
    state.pop("noise_token")
    state["loss_computer.lpips.net.0.weight"] = torch.zeros(2)
    ckpt = _release_file(tmp_path, state)
    dino = _tiny_dinov3(tmp_path / "dinov3")
    assert cli(["convert", "official", str(ckpt), "--out", str(tmp_path / "conv"), "--image-size", "64",
                "--dinov3", str(tmp_path / "dinov3")]) == 0
    out = capsys.readouterr().out
    assert out.count("noise_token") == 1 and "dropped 3 keys" in out
    assert sorted(p.name for p in (tmp_path / "conv").iterdir()) == ["config.yaml", "converted_from.json",
                                                                     "model.safetensors"]
    api = Api.from_pretrained(tmp_path / "conv", device="cpu")
    m = api.config.model
    assert (m.dim, m.camera_layers, m.num_latents, m.patch_size, m.image_size, m.motion_heads or m.heads) == (
        768, 1, 16, 16, 64, 12)
    torch.testing.assert_close(api.pipeline.model.scene.latents, state["scene_code"])
    # the motion head gets raw DINOv3 patch tokens (class + 4 registers dropped, ImageNet normalisation), one per
    # 16-pixel patch, as in the release
    images = torch.rand(1, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    feats = api.pipeline.semantic_features(images)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    with torch.no_grad():
        ref = dino(pixel_values=(images[0] - mean) / std).last_hidden_state[:, 5:]
    torch.testing.assert_close(feats[0], ref.transpose(1, 2).reshape(2, 64, 4, 4), atol=1e-5, rtol=1e-5)
    pred = api.predict(images[0])
    assert pred["motion_masks"].shape == (2, 1, 64, 64) and pred["token_mask"].shape == (2, 16)
    assert api.render(pred, pred["cameras"]["c2w"], pred["cameras"]["fxfycxcy"]).shape == (2, 3, 64, 64)


def test_convert_refuses_code_and_foreign_files_in_one_line(tmp_path, capsys, fixture_state):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    assert cli(["convert", "official", str(evil), "--out", str(tmp_path / "o")]) == 2
    cap = capsys.readouterr()
    assert "executed" not in cap.out and "refused by safe loading" in cap.err and cap.err.count("\n") == 1
    torch.save([1, 2], tmp_path / "list.pt")
    assert cli(["convert", "official", str(tmp_path / "list.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "not a checkpoint dict" in capsys.readouterr().err
    torch.save({"model": {"foo.weight": torch.zeros(1)}}, tmp_path / "foreign.pt")
    assert cli(["convert", "official", str(tmp_path / "foreign.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "scene_code" in capsys.readouterr().err
    # an output folder holding someone else's files is never written into
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy/notes.txt").write_text("mine")
    ckpt = _release_file(tmp_path, fixture_state)
    assert cli(["convert", "official", str(ckpt), "--out", str(tmp_path / "busy"), "--image-size", "64"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]
    assert not (tmp_path / "o").exists()
    with pytest.raises(CheckpointError, match="not found.*uva-cv-lab/wildrayzer-2view"):
        read_official_state(tmp_path / "missing.pt")
    os.mkfifo(tmp_path / "pipe.pt")  # refused before reading: no writer ever comes
    assert cli(["convert", "official", str(tmp_path / "pipe.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "FIFO" in capsys.readouterr().err


def test_model_path_to_a_release_file_converts_once_and_reuses(tmp_path, fixture_state, capsys):
    """inference.model_path=…/wildrayzer_2view.pt (the published command) converts beside the file, once."""
    from wildrayzer.config import ConfigError
    from wildrayzer.infer.pipeline import Pipeline

    ckpt = _release_file(tmp_path, fixture_state)
    _tiny_dinov3(tmp_path / "dinov3")
    cfg = load_config(REPO / "configs/wildrayzer_inference.yaml",
                      ["model.camera_layers=1", "model.scene_layers=1", "model.renderer_layers=1",
                       "model.num_latents=16", "model.image_size=64", f"semantic.model_path={tmp_path / 'dinov3'}",
                       "semantic.feature_size=4", f"inference.model_path={ckpt}"])
    pipe = Pipeline.load(cfg.inference.model_path, expected_cfg=cfg, device="cpu", semantic_cfg=cfg.semantic)
    conv = tmp_path / "wildrayzer_2view.converted-64px-2+6"
    assert pipe.path == conv / "model.safetensors" and "converting" in capsys.readouterr().out
    stamp = pipe.path.stat().st_mtime_ns
    Pipeline.load(cfg.inference.model_path, expected_cfg=cfg, device="cpu", semantic_cfg=cfg.semantic)
    assert "converting" not in capsys.readouterr().out and pipe.path.stat().st_mtime_ns == stamp  # reused
    with pytest.raises(ConfigError, match="semantic.backbone=none.*dinov3"):  # the motion head needs its features
        Pipeline.load(ckpt, expected_cfg=cfg, device="cpu",
                      semantic_cfg=load_config(None, ["semantic.backbone=none"]).semantic)


def test_converted_model_renders_like_the_release(tmp_path, fixture_state):
    """Conversion through the file path gives the same model as the parity run: renders equal the fixture's."""
    from safetensors.torch import load_file

    from wildrayzer.weights import load_model_checkpoint

    ckpt = _release_file(tmp_path, fixture_state)
    convert_official(ckpt, tmp_path / "c", image_size=64, log=lambda m: None)
    model = load_model_checkpoint(tmp_path / "c").model.eval()
    io = load_file(str(TINY / "io.safetensors"))
    with torch.no_grad():
        out = model(io["images"], 2, semantic_feats=torch.cat([
            io["dino_features_input"].reshape(1, 2, 4, 4, 64).permute(0, 1, 4, 2, 3),
            io["dino_features_target"].reshape(1, 6, 4, 4, 64).permute(0, 1, 4, 2, 3)], dim=1),
            motion_all_views=True)
    torch.testing.assert_close(out["renders"], io["render"], atol=1e-5, rtol=0)
