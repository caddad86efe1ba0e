"""Untrusted files and strings: crafted pickles are refused on every loading path without running, the package has
no unsafe deserialisation / eval, config interpolation cannot run code, the demo is local-only with bounded
uploads, and the HTML report of a real inference run escapes hostile scene names and keeps every file inside the
output root.

Decision on OmegaConf interpolation: ``${...}`` is resolved when the config is loaded. References to other keys and
OmegaConf's built-in ``oc.*`` resolvers (``oc.env`` reads the user's own environment; none of them evaluates code)
are allowed; the package registers no resolver, so anything else (``${python:...}``, ``${eval:...}``) is a one-line
ConfigError (exit 2). YAML is read with ``yaml.safe_load`` (no ``!!python/...`` tags).
"""

from __future__ import annotations

import ast
import io
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import INFER_CFG, MODEL, NO_MOTION, QUIET, REPO, TRAIN_CFG, small_synth

from wildrayzer.cli import main as cli_main
from wildrayzer.config import load_config
from wildrayzer.errors import CheckpointError, ConfigError, UserError

pytestmark = pytest.mark.usefixtures("one_thread")


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears iff the pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps({"state_dict": {"w": _Payload(marker)}})


def torch_save_bytes(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"step": 1, "optimizer": _Payload(marker)}, buf)  # torch's zip format, a pickle inside
    return buf.getvalue()


@pytest.fixture
def marker(tmp_path) -> Path:
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "a crafted pickle was executed"


def test_payload_is_armed(tmp_path):
    """Control: loading the crafted bytes unsafely does run code (so the refusals below mean something)."""
    m = tmp_path / "armed"
    pickle.loads(pickle_bytes(m))
    assert m.exists()
    m.unlink()
    torch.load(io.BytesIO(torch_save_bytes(m)), weights_only=False)
    assert m.exists()


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return small_synth(tmp_path_factory.mktemp("sec_synth"))


def _write_evil(path: Path, marker: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle_bytes(marker) if kind == "pickle" else torch_save_bytes(marker))
    return path


@pytest.mark.parametrize("kind", ["pickle", "torch_zip"])
@pytest.mark.parametrize("layout", ["pt_file", "safetensors_name", "pretrained_dir", "run_dir"])
def test_crafted_checkpoint_refused_by_load_model_checkpoint(tmp_path, marker, kind, layout):
    from wildrayzer.weights import load_model_checkpoint

    if layout == "pt_file":
        target = _write_evil(tmp_path / "model.pt", marker, kind)
    elif layout == "safetensors_name":
        target = _write_evil(tmp_path / "model.safetensors", marker, kind)
    elif layout == "pretrained_dir":
        target = tmp_path / "pre"
        _write_evil(target / "model.safetensors", marker, kind)
        (target / "config.yaml").write_text("{}\n")
    else:
        target = tmp_path / "run"
        _write_evil(target / "checkpoints" / "ckpt_00000001.safetensors", marker, kind)
        (target / "checkpoints" / "ckpt_LATEST").write_text("ckpt_00000001\n")
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_model_checkpoint(target)


def test_crafted_checkpoint_refused_by_from_pretrained(tmp_path, marker):
    from wildrayzer import WildRayZer

    _write_evil(tmp_path / "hub" / "model.safetensors", marker, "torch_zip")
    with pytest.raises(CheckpointError):
        WildRayZer.from_pretrained(tmp_path / "hub", device="cpu")
    with pytest.raises(CheckpointError):
        WildRayZer.from_pretrained(_write_evil(tmp_path / "w.pt", marker, "pickle"), device="cpu")


def _cli(argv, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.delenv("WILDRAYZER_DEBUG", raising=False)
    rc = cli_main(argv)
    return rc, capsys.readouterr().err


def test_crafted_init_from_and_inference_model_path_exit_2(synth, tmp_path, marker, monkeypatch, capsys):
    evil = _write_evil(tmp_path / "stage1.pt", marker, "torch_zip")
    rc, err = _cli(["train", "--config", str(TRAIN_CFG), *MODEL, *QUIET, "training.max_steps=1",
                    f"training.output_dir={tmp_path / 'exp'}", f"data.root={synth / 're10k_processed_v2'}",
                    f"training.init_from={evil}"], monkeypatch, capsys)
    assert rc == 2 and "stage1.pt" in err.strip().splitlines()[-1], err
    assert not list((tmp_path / "exp").rglob("ckpt_LATEST"))
    rc, err = _cli(["infer", "--config", str(INFER_CFG), *MODEL, *NO_MOTION, *QUIET, f"inference.model_path={evil}",
                    f"data.root={synth / 'dynamic_re10k'}", f"inference_out_root={tmp_path / 'out'}"],
                   monkeypatch, capsys)
    assert rc == 2 and err.count("\n") == 1 and "stage1.pt" in err, err


def test_crafted_training_state_refused_on_resume(synth, tmp_path, marker, monkeypatch, capsys):
    """Genuine safetensors weights, but the .state.pt beside them is a code-running pickle: resume refuses it."""
    from wildrayzer.model import WildRayZerModel
    from wildrayzer.train.checkpoint import load_training_state, save_checkpoint

    overrides = [*MODEL, *QUIET, "training.max_steps=3", f"training.output_dir={tmp_path / 'exp'}",
                 "training.run_name=run", f"data.root={synth / 're10k_processed_v2'}", "data.num_workers=0",
                 "training.batch_size=2"]
    cfg = load_config(TRAIN_CFG, overrides)
    weights = save_checkpoint(tmp_path / "exp" / "run", 1, WildRayZerModel(cfg.model), cfg, {"step": 1})
    state = weights.with_name("ckpt_00000001.state.pt")
    state.write_bytes(torch_save_bytes(marker))
    with pytest.raises(CheckpointError, match="unreadable"):
        load_training_state(weights)
    rc, err = _cli(["train", "--config", str(TRAIN_CFG), *overrides], monkeypatch, capsys)
    assert rc == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: training state") and "ckpt_00000001.state.pt" in last, err
    assert (tmp_path / "exp/run/checkpoints/ckpt_LATEST").read_text().strip() == "ckpt_00000001"


def test_crafted_auxiliary_weights_refused(tmp_path, marker):
    """Perceptual (VGG-19) and LPIPS weight files are read with weights_only=True too."""
    from wildrayzer.infer.lpips import load_lpips
    from wildrayzer.train.perceptual import PerceptualLoss

    evil = _write_evil(tmp_path / "vgg19.pth", marker, "torch_zip")
    with pytest.raises(CheckpointError, match="cannot read"):
        PerceptualLoss.from_file(evil)
    with pytest.raises(UserError, match="cannot read"):
        load_lpips(_write_evil(tmp_path / "lpips" / "alex.pth", marker, "torch_zip"))


# ------------------------------------------------------------------------------------------- source scan
UNSAFE_NAMES = {"eval", "exec", "compile", "__import__"}
UNSAFE_MODULE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("marshal", "load"),
                       ("marshal", "loads"), ("shelve", "open"), ("dill", "load"), ("dill", "loads"),
                       ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
                       ("OmegaConf", "register_new_resolver"), ("OmegaConf", "register_resolver")}


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def scan_source(text: str, filename: str) -> list[str]:
    """Unsafe calls in one Python source: torch.load without weights_only=True, pickle/marshal/yaml.load & co,
    builtin eval/exec/compile, numpy.load(allow_pickle=True), shell=True, OmegaConf resolver registration."""
    bad = []
    for node in ast.walk(ast.parse(text, filename)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        where = f"{filename}:{node.lineno}"
        if isinstance(f, ast.Name) and f.id in UNSAFE_NAMES:
            bad.append(f"{where} {f.id}()")
        if isinstance(f, ast.Attribute):
            owner = f.value.id if isinstance(f.value, ast.Name) else getattr(f.value, "attr", "")
            if owner == "torch" and f.attr == "load":
                wo = _kw(node, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    bad.append(f"{where} torch.load without weights_only=True")
            if (owner, f.attr) in UNSAFE_MODULE_CALLS:
                bad.append(f"{where} {owner}.{f.attr}()")
            if owner in ("np", "numpy") and f.attr == "load":
                ap = _kw(node, "allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    bad.append(f"{where} numpy.load(allow_pickle=...)")
            if owner == "builtins" and f.attr in UNSAFE_NAMES:
                bad.append(f"{where} builtins.{f.attr}()")
        sh = _kw(node, "shell")
        if sh is not None and not (isinstance(sh, ast.Constant) and sh.value is False):
            bad.append(f"{where} shell=True")
    return bad


def test_scanner_catches_each_unsafe_pattern():
    src = "\n".join(["import torch, pickle, yaml, numpy as np, subprocess", "torch.load(p)",
                     "torch.load(p, weights_only=False)", "pickle.loads(b)", "eval(s)", "exec(s)",
                     "yaml.load(t)", "np.load(p, allow_pickle=True)", "subprocess.run(c, shell=True)",
                     "OmegaConf.register_new_resolver('x', f)", "model.eval()",
                     "torch.load(p, map_location='cpu', weights_only=True)", "yaml.safe_load(t)"])
    flagged = sorted({int(b.split(":")[1].split()[0]) for b in scan_source(src, "x.py")})
    assert flagged == list(range(2, 11))  # every unsafe line, none of the three safe ones


def test_package_has_no_unsafe_deserialisation_or_eval():
    files = sorted((REPO / "wildrayzer").rglob("*.py")) + [REPO / "train.py", REPO / "inference.py"]
    assert len(files) > 30
    bad = [b for f in files for b in scan_source(f.read_text(), str(f.relative_to(REPO)))]
    assert not bad, bad


# ------------------------------------------------------------------------------------------- config strings
def test_no_custom_omegaconf_resolvers_registered():
    import omegaconf.basecontainer as bc

    import wildrayzer.api  # noqa: F401 - import the package's heavy parts: none may register a resolver
    import wildrayzer.train.loop  # noqa: F401

    assert {k for k in bc.BaseContainer._resolvers if not k.startswith("oc.")} == set()


def test_builtin_env_resolver_is_resolved_at_load_and_harmless(monkeypatch):
    monkeypatch.setenv("WRZ_RUN", "from_env")
    cfg = load_config(None, ["training.run_name=${oc.env:WRZ_RUN}", "inference_out_root=out/${training.run_name}"])
    assert cfg.training.run_name == "from_env" and cfg.inference_out_root == "out/from_env"
    assert "${" not in json.dumps(__import__("omegaconf").OmegaConf.to_container(cfg))  # stored resolved


@pytest.mark.parametrize("value", ["${python:__import__}", "${eval:1+1}", "${exec:x}", "${oc.env:WRZ_UNSET_VAR}",
                                   "${no.such.key}"])
def test_unsupported_interpolations_are_config_errors(value, monkeypatch, tmp_path):
    monkeypatch.delenv("WRZ_UNSET_VAR", raising=False)
    with pytest.raises(ConfigError, match="training.run_name.*cannot resolve interpolation"):
        load_config(None, [f"training.run_name={value}"])
    f = tmp_path / "c.yaml"
    f.write_text(f"training:\n  run_name: '{value}'\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(f)


def test_interpolation_and_yaml_tags_through_cli_exit_2(tmp_path, marker, monkeypatch, capsys):
    rc, err = _cli(["train", "--config", str(TRAIN_CFG), "training.run_name=${python:os.system}"], monkeypatch, capsys)
    assert rc == 2 and err.count("\n") == 1 and "training.run_name" in err, err
    f = tmp_path / "evil.yaml"
    f.write_text(f"training:\n  run_name: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    rc, err = _cli(["train", "--config", str(f)], monkeypatch, capsys)
    assert rc == 2 and "evil.yaml" in err and err.count("\n") == 1, err


def test_stored_config_with_interpolation_in_checkpoint_header_is_not_executed(tmp_path, marker):
    """A checkpoint whose stored config carries a resolver it cannot have been written with is refused."""
    from safetensors.torch import save_file

    from wildrayzer.config import to_container
    from wildrayzer.model import WildRayZerModel
    from wildrayzer.weights import FORMAT, load_model_checkpoint

    cfg = load_config(None, MODEL)
    stored = to_container(cfg)
    stored["training"]["run_name"] = "${python:__import__('os').system('touch " + str(marker) + "')}"
    state = {k: v.contiguous() for k, v in WildRayZerModel(cfg.model).state_dict().items()}
    save_file(state, str(tmp_path / "m.safetensors"), metadata={"format": FORMAT, "config": json.dumps(stored)})
    with pytest.raises(CheckpointError, match="stored config is unreadable"):
        load_model_checkpoint(tmp_path / "m.safetensors")


# ------------------------------------------------------------------------------------------- demo
# (load_upload's own checks are in tests/test_demo.py; here: binding, upload cap, the handler's refusal)
@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory) -> Path:
    from wildrayzer.model import WildRayZerModel
    from wildrayzer.weights import save_pretrained

    cfg = load_config(INFER_CFG, MODEL + NO_MOTION)
    torch.manual_seed(0)
    return save_pretrained(WildRayZerModel(cfg.model), cfg, tmp_path_factory.mktemp("sec_ckpt") / "tiny")


@pytest.mark.parametrize("host_args, host", [([], "127.0.0.1"), (["--host", "0.0.0.0"], "0.0.0.0")])
def test_demo_binds_localhost_unless_host_and_limits_uploads(tiny_pretrained, tmp_path, monkeypatch, host_args, host):
    gr = pytest.importorskip("gradio")
    from wildrayzer.commands import demo

    launched = {}

    def fake_launch(self, *args, **kwargs):  # no server, no network
        launched.update(kwargs, args=args)
        return None

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    monkeypatch.chdir(tmp_path)  # no embedded examples here
    assert demo.main(["--checkpoint", str(tiny_pretrained), "--device", "cpu", *host_args]) == 0
    assert launched["server_name"] == host and not launched["args"]
    assert launched["max_file_size"] == demo.MAX_UPLOAD and not launched.get("share")


def test_demo_predict_handler_rejects_non_images(tiny_pretrained, tmp_path):
    gr = pytest.importorskip("gradio")
    from wildrayzer import WildRayZer
    from wildrayzer.commands.demo import build_app

    app = build_app(WildRayZer.from_pretrained(tiny_pretrained, device="cpu"))
    fn = next(f.fn for f in app.fns.values() if f.api_name == "predict")
    (tmp_path / "a.txt").write_text("hello")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(gr.Error, match="a.txt is not an image"):
        fn(str(tmp_path / "a.txt"), str(tmp_path / "b.png"))
    overlays, _, views, first, _ = fn(str(tmp_path / "b.png"), str(tmp_path / "b.png"))  # a good upload works
    assert len(overlays) == 2 and first.shape == (32, 32, 3) and len(views) == 24


# ------------------------------------------------------------------------------------------- HTML report
HOSTILE = ["<script>alert(1)</script>", "../../escape", "<img src=x onerror=alert(2)>"]


def test_real_inference_report_escapes_hostile_scene_names(synth, tiny_pretrained, tmp_path, monkeypatch, capsys):
    """Metadata scene_name, image folder and view-index key carry hostile names; the real runner must keep every
    file inside inference_out_root and the page must show the names as text only."""
    root = tmp_path / "data"
    split = root / "test"
    src = synth / "dynamic_re10k" / "test"
    (split / "metadata").mkdir(parents=True)
    table, lines = {}, []
    idx = json.loads((src / "dre10k_final_context_2_view_idx.json").read_text())["dynamic_test_0000"]
    meta = json.loads((src / "metadata" / "dynamic_test_0000.json").read_text())
    for i, name in enumerate(HOSTILE):
        img_dir = split / "images" / f"s{i}" / name  # the name as a (nested) folder too
        img_dir.mkdir(parents=True)
        frames = []
        for j, fr in enumerate(meta["frames"]):
            shutil.copy(src / fr["image_path"], img_dir / f"{j:05d}.png")
            frames.append({**fr, "image_path": f"images/s{i}/{name}/{j:05d}.png"})
        (split / "metadata" / f"m{i}.json").write_text(json.dumps({"scene_name": name, "frames": frames}))
        lines.append(f"metadata/m{i}.json")
        table[name] = idx
    (split / "list.txt").write_text("\n".join(lines) + "\n")
    (split / "idx.json").write_text(json.dumps(table))
    out = tmp_path / "results" / "eval"
    before = {p for p in tmp_path.rglob("*")}
    rc, err = _cli(["infer", "--config", str(INFER_CFG), *MODEL, *NO_MOTION, *QUIET,
                    f"inference.model_path={tiny_pretrained}", f"data.root={root}", "data.list_file=list.txt",
                    "data.view_idx_file=idx.json", f"inference_out_root={out}"], monkeypatch, capsys)
    assert rc == 0, err
    created = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in created if p != out and out not in p.parents and p not in out.parents]
    assert not outside, outside
    scene_dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    safe = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
    assert len(scene_dirs) == 3 and all(safe.fullmatch(n) for n in scene_dirs), scene_dirs
    doc = (out / "index.html").read_text(encoding="utf-8")
    low = doc.lower()
    assert "<script" not in low and "<img src=x" not in low and "onerror=alert" not in low.replace(
        "onerror=alert(2)&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc and "&lt;img src=x onerror=alert(2)&gt;" in doc
    assert "../../escape" in doc
    from html.parser import HTMLParser

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.events = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.events += [k for k, _ in attrs if k.startswith("on")]
            for k, v in attrs:
                if k in ("src", "href"):
                    assert not v.startswith(("/", "javascript:")) and ".." not in v.split("/"), v

    parser = Tags()
    parser.feed(doc)
    assert "script" not in parser.tags and not parser.events
