"""Checkpoint files: round trip, strict loading, mismatch errors, atomic LATEST, keep-last-N, init_from."""

import json

import pytest
import torch
from safetensors.torch import save_file
from tiny_run import TINY_MODEL

from wildrayzer import weights
from wildrayzer.config import load_config
from wildrayzer.errors import CheckpointError
from wildrayzer.model import WildRayZerModel
from wildrayzer.train import checkpoint as ck
from wildrayzer.train.checkpoint import save_checkpoint
from wildrayzer.train.warmstart import init_from_checkpoint
from wildrayzer.weights import latest_checkpoint, load_model_checkpoint, save_pretrained

TINY = [*TINY_MODEL, "model.motion_layers=1", "model.num_context_views=2", "model.num_target_views=3"]


def tiny(*extra):
    return load_config(None, TINY + list(extra))


def save(run, step, model, cfg, **kw):
    state = {"step": step, "optimizer": {}, "scheduler": {}, "rng": [], "sampler": {}, "nonfinite_total": 0,
             "world_size": 1}  # the keys load_training_state requires
    return save_checkpoint(run, step, model, cfg, state, **kw)


def test_round_trip_file_run_dir_and_pretrained_dir(tmp_path):
    cfg = tiny()
    torch.manual_seed(0)
    model = WildRayZerModel(cfg.model)
    path = save(tmp_path / "run", 5, model, cfg)
    assert path.name == "ckpt_00000005.safetensors"
    assert (tmp_path / "run/checkpoints/ckpt_LATEST").read_text().strip() == "ckpt_00000005"
    pre = save_pretrained(model, cfg, tmp_path / "pre")
    assert (pre / "config.yaml").is_file()
    for where in (path, tmp_path / "run", tmp_path / "run/checkpoints", pre):
        loaded = load_model_checkpoint(where, expected_cfg=cfg)
        assert loaded.metadata["num_context_views"] == "2" and loaded.metadata["num_target_views"] == "3"
        assert loaded.config.model.dim == 64 and not loaded.model.training
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[k], v), k
    assert "noise_token" in loaded.model.state_dict()


def test_mismatched_views_layers_or_dim_raise_listing_differences(tmp_path):
    cfg = tiny()
    path = save(tmp_path / "run", 1, WildRayZerModel(cfg.model), cfg)
    with pytest.raises(CheckpointError, match="num_target_views: checkpoint 3 vs config 6"):
        load_model_checkpoint(path, expected_cfg=tiny("model.num_target_views=6"))
    with pytest.raises(CheckpointError, match="camera_layers.*dim|dim.*camera_layers"):
        load_model_checkpoint(path, expected_cfg=tiny("model.camera_layers=2", "model.dim=128"))
    # weights that do not fit the model (shape and key level)
    other = WildRayZerModel(tiny("model.num_latents=32").model)
    with pytest.raises(CheckpointError, match="shape: scene.latents"):
        weights.load_state_strict(WildRayZerModel(cfg.model), other.state_dict(), "x")
    state = WildRayZerModel(cfg.model).state_dict()
    state.pop("noise_token")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="missing: noise_token.*unexpected: extra.weight"):
        weights.load_state_strict(WildRayZerModel(cfg.model), state, "x")


def test_foreign_truncated_and_missing_checkpoints(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a WildRayZer checkpoint"):
        load_model_checkpoint(foreign)
    cfg = tiny()
    good = save(tmp_path / "run", 1, WildRayZerModel(cfg.model), cfg)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model_checkpoint(cut)
    with pytest.raises(CheckpointError, match="not found"):
        load_model_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_model_checkpoint(tmp_path)


def test_failing_writer_never_corrupts_latest(tmp_path, monkeypatch):
    cfg = tiny()
    model = WildRayZerModel(cfg.model)
    save(tmp_path, 1, model, cfg)
    real = ck.atomic_write_bytes
    calls = []

    def dying(path, data):  # the process "dies" while writing the training state of step 2
        calls.append(path.name)
        if path.name.endswith(".state.pt"):
            path.with_name(f".{path.name}.tmp").write_bytes(data[: len(data) // 3])
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(ck, "atomic_write_bytes", dying)
    with pytest.raises(OSError):
        save(tmp_path, 2, model, cfg)
    monkeypatch.setattr(ck, "atomic_write_bytes", real)
    assert calls == ["ckpt_00000002.safetensors", "ckpt_00000002.state.pt"]
    assert latest_checkpoint(tmp_path).name == "ckpt_00000001.safetensors"
    load_model_checkpoint(tmp_path)
    assert ck.load_training_state(latest_checkpoint(tmp_path))["step"] == 1
    # the real writer leaves no partial file under the final name when the write itself fails
    monkeypatch.setattr(ck.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("io error")))
    with pytest.raises(OSError):
        ck.atomic_write_bytes(tmp_path / "checkpoints" / "ckpt_LATEST", b"ckpt_00000009\n")
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path).name == "ckpt_00000001.safetensors"
    assert not list((tmp_path / "checkpoints").glob(".ckpt_LATEST*"))


def test_keep_last_n(tmp_path):
    cfg = tiny()
    model = WildRayZerModel(cfg.model)
    for step in range(1, 6):
        save(tmp_path, step, model, cfg, keep_last_n=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["ckpt_00000004.safetensors", "ckpt_00000004.state.pt", "ckpt_00000005.safetensors",
                     "ckpt_00000005.state.pt", "ckpt_LATEST"]


def test_init_from_stage1_into_motion_model_lists_fresh_modules(tmp_path):
    cfg1 = tiny()
    torch.manual_seed(0)
    src = WildRayZerModel(cfg1.model)
    save(tmp_path / "stage1", 3, src, cfg1)
    cfg2 = tiny("model.use_motion_mask=true", "model.use_mae_masking=true", "training.stage=2")
    dst = WildRayZerModel(cfg2.model, semantic_dim=0)
    lines = []
    fresh = init_from_checkpoint(dst, cfg2, str(tmp_path / "stage1"), lines.append)
    assert fresh and all(k.startswith("motion.") for k in fresh)
    assert "motion" in lines[0]
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="renderer_layers"):
        init_from_checkpoint(WildRayZerModel(tiny("model.renderer_layers=2").model), tiny("model.renderer_layers=2"),
                             str(tmp_path / "stage1"), lines.append)
    # the reverse (a motion checkpoint into a model without one) is not legitimate
    save(tmp_path / "stage2", 1, dst, cfg2)
    with pytest.raises(CheckpointError, match="use_motion_mask"):
        init_from_checkpoint(WildRayZerModel(cfg1.model), cfg1, str(tmp_path / "stage2"), lines.append)


def _fresh_part_from_a_source_without_it(tmp_path, base: tuple, option: str, part: str, arch_key: str) -> None:
    """A checkpoint built with ``base`` starts a model with ``option`` too: only ``camera.<part>`` is fresh (and
    predicts nothing yet, so the cameras are the source's), everything else is copied; the reverse would drop trained
    weights: refused, naming ``arch_key``."""
    cfg1 = tiny(*base)
    torch.manual_seed(0)
    src = WildRayZerModel(cfg1.model)
    save(tmp_path / "src", 3, src, cfg1)
    cfg2 = tiny(*base, option)
    dst = WildRayZerModel(cfg2.model)
    lines = []
    fresh = init_from_checkpoint(dst, cfg2, str(tmp_path / "src"), lines.append)
    assert fresh and all(k.startswith(f"camera.{part}.") for k in fresh)
    assert lines[0].endswith(f"keep their fresh init: camera.{part}")
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    x = torch.rand(1, cfg1.model.num_context_views + cfg1.model.num_target_views, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(x, 2)["cameras"]["c2w"], src.eval()(x, 2)["cameras"]["c2w"])
    save(tmp_path / "dst", 1, dst, cfg2)
    with pytest.raises(CheckpointError, match=arch_key):
        init_from_checkpoint(WildRayZerModel(cfg1.model), cfg1, str(tmp_path / "dst"), lines.append)


def test_init_from_view_index_checkpoint_into_own_view_model(tmp_path):
    """A release-style estimator (camera_query=view_index) starts an own-view model: the pool is fresh (zero output,
    so the cameras are the source's), everything else is copied; the reverse would drop trained weights: refused."""
    _fresh_part_from_a_source_without_it(tmp_path, (), "model.camera_query=own_view", "own_view_pool", "camera_query")


def test_init_from_checkpoint_without_shift_cue_into_a_cued_model(tmp_path):
    """An estimator without the shift cue starts one with it (model.camera_shift_cue): the cue is fresh (zero output,
    so the cameras are the source's), the rest copied; a cued checkpoint into a model without one is refused."""
    _fresh_part_from_a_source_without_it(tmp_path, ("model.camera_query=own_view",), "model.camera_shift_cue=true",
                                         "shift_cue", "camera_shift_cue")


def test_init_from_posed_checkpoint_into_predicting_model_keeps_a_fresh_estimator(tmp_path):
    """A posed model (model.cameras=given) builds no camera estimator: a model that predicts its cameras starts from
    its tokenizer, scene encoder and renderer with the whole estimator fresh (whatever its layers or query); a posed
    model cannot start from a predicting one (its estimator would be dropped)."""
    cfg1 = tiny("model.cameras=given", "model.camera_layers=1")
    torch.manual_seed(0)
    src = WildRayZerModel(cfg1.model)
    save(tmp_path / "posed", 3, src, cfg1)
    cfg2 = tiny("model.camera_query=own_view")
    torch.manual_seed(1)
    dst = WildRayZerModel(cfg2.model)
    before = {k: v.clone() for k, v in dst.state_dict().items() if k.startswith("camera.")}
    lines = []
    fresh = init_from_checkpoint(dst, cfg2, str(tmp_path / "posed"), lines.append)
    assert sorted(fresh) == sorted(before) and any(k.startswith("camera.own_view_pool.") for k in fresh)
    assert "camera." in lines[0] and "motion" not in lines[0]
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    for k, v in before.items():
        assert torch.equal(dst.state_dict()[k], v)
    cfg3 = tiny("model.renderer_layers=2")
    with pytest.raises(CheckpointError, match="renderer_layers"):  # the parts it copies must still match
        init_from_checkpoint(WildRayZerModel(cfg3.model), cfg3, str(tmp_path / "posed"), lines.append)
    save(tmp_path / "predicting", 1, dst, cfg2)
    with pytest.raises(CheckpointError, match="cameras"):
        init_from_checkpoint(WildRayZerModel(cfg1.model), cfg1, str(tmp_path / "predicting"), lines.append)


def test_checkpoint_of_the_pre_release_layout_is_a_clear_error(tmp_path):
    """Checkpoints of WildRayZer 0.1 (its own layout, before the release architecture) cannot be loaded: say so."""
    cfg = tiny()
    path = save_pretrained(WildRayZerModel(cfg.model), cfg, tmp_path / "old") / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    stored = json.loads(meta["config"])
    stored["model"]["camera_pose_input"] = "pair"
    save_file(state, str(path), metadata={**meta, "config": json.dumps(stored)})
    with pytest.raises(CheckpointError, match="WildRayZer 0.1.*retrain"):
        load_model_checkpoint(path)
