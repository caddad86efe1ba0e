import logging
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch

from wildrayzer.geometry import make_pose, plucker_rays, rotation_6d_to_matrix
from wildrayzer.infer.metrics import MetricsAggregator
from wildrayzer.infer.plucker_vis import save_plucker_vis
from wildrayzer.infer.report import write_report
from wildrayzer.infer.video import write_video
from wildrayzer.infer.visuals import error_map, mask_overlay, save_png

EVIL_NAMES = ["<script>alert(1)</script>", "../evil"]


def build_sample_report(out_root: Path, names=("scene_a", *EVIL_NAMES), size: int = 64):
    """Write real per-scene PNGs/GIFs like the inference runner does and the report on top. -> (referenced, html)."""
    g = torch.Generator().manual_seed(0)
    agg = MetricsAggregator()
    scenes = []
    for s, name in enumerate(names):
        folder = f"scene_{s:03d}"  # the runner sanitises names into folder names
        d = out_root / folder
        yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
        base = torch.stack([xx, yy, 0.5 * (1 - xx)])  # (3, H, W) gradient so images are not blank
        inputs, targets, pluckers = [], [], []
        for v in range(2):
            img = (base + 0.1 * torch.rand(3, size, size, generator=g)).clamp(0, 1)
            mask = torch.zeros(1, size, size)
            mask[:, 16 + 8 * v : 40 + 8 * v, 20:44] = 1.0
            save_png(d / f"input_{v:02d}.png", img)
            save_png(d / f"input_{v:02d}_mask_overlay.png", mask_overlay(img, mask))
            inputs.append({"label": f"input {v}", "image": f"{folder}/input_{v:02d}.png",
                           "overlay": f"{folder}/input_{v:02d}_mask_overlay.png"})
        gt = base.clone()
        render = (gt + 0.15 * torch.randn(3, size, size, generator=g)).clamp(0, 1)
        save_png(d / "render_00.png", render)
        save_png(d / "gt_00.png", gt)
        save_png(d / "error_00.png", error_map(render, gt))
        targets.append({"label": "target 0", "render": f"{folder}/render_00.png", "gt": f"{folder}/gt_00.png",
                        "error": f"{folder}/error_00.png"})
        c2w = make_pose(rotation_6d_to_matrix(torch.tensor([1.0, 0.1, 0.0, 0.0, 1.0, 0.2])), torch.tensor([1.0, 0, 0]))
        ray_map = plucker_rays(c2w, torch.tensor([60.0, 60.0, size / 2, size / 2]), size, size)
        pv = save_plucker_vis(d, ray_map, stem="target_00", stride=16, include_quiver=(s == 0))
        pluckers.append({"label": "target 0", **{k: f"{folder}/{p.name}" for k, p in pv.items()}})
        video = None
        if s == 0:
            write_video(d / "video.gif", torch.stack([base * (0.5 + 0.1 * t) for t in range(4)]), fps=4)
            video = f"{folder}/video.gif"
        (d / "cameras.json").write_text("{}")
        metrics = {"psnr": 20.0 + s, "ssim": 0.7, "lpips": None, "mask_iou": 0.5}
        agg.add(name, metrics)
        scenes.append({"name": name, "dir": folder, "metrics": metrics, "inputs": inputs, "targets": targets,
                       "plucker": pluckers, "video": video, "files": {"cameras.json": f"{folder}/cameras.json"}})
    referenced = write_report(out_root, agg.summary(), scenes)
    return referenced, (out_root / "index.html").read_text(encoding="utf-8")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.urls, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data):
        self.text.append(data)


def _parse(doc: str) -> _Links:
    p = _Links()
    p.feed(doc)
    return p


def test_report_is_self_contained_and_every_reference_exists(tmp_path):
    out = tmp_path / "eval"
    referenced, doc = build_sample_report(out)
    assert referenced and all((out / r).exists() for r in referenced)
    kinds = {Path(r).name for r in referenced}
    assert {"input_00_mask_overlay.png", "render_00.png", "gt_00.png", "error_00.png", "video.gif",
            "target_00_plucker_residual.png", "target_00_plucker_quiver.png", "cameras.json"} <= kinds
    parsed = _parse(doc)
    assert "script" not in parsed.tags and "link" not in parsed.tags and "style" in parsed.tags
    for url in parsed.urls:
        assert not urlsplit(url).scheme and not url.startswith("/"), url
        if not url.startswith("#"):
            assert unquote(url) in referenced
    assert "http" not in doc.lower().replace("http-equiv", "")
    assert "missing:" not in "".join(parsed.text) and "file(s) missing" not in doc


def test_report_escapes_user_strings_and_writes_only_index(tmp_path):
    out = tmp_path / "eval"
    _, doc = build_sample_report(out)
    assert "<script>" not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc
    text = "".join(_parse(doc).text)
    assert "<script>alert(1)</script>" in text and "../evil" in text  # shown literally, as text
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "scene_000", "scene_001", "scene_002"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]


def test_summary_table_shows_na_for_missing_lpips(tmp_path):
    _, doc = build_sample_report(tmp_path, names=("only",))
    row = next(line for line in doc.split("<tr>") if "LPIPS" in line)
    assert "n/a" in row
    assert "20.00" in doc and "0.5000" in doc and "PSNR ↑" in doc and "LPIPS ↓" in doc
    write_report(tmp_path / "plain", {"psnr": 21.78, "lpips": None, "ssim": float("nan")}, [])
    plain = (tmp_path / "plain" / "index.html").read_text()
    assert "21.78" in plain and plain.count("n/a") == 2


def test_missing_files_are_reported(tmp_path, caplog):
    save_png(tmp_path / "s" / "gt.png", torch.rand(3, 8, 8))
    scene = {"name": "s", "targets": [{"render": "s/render.png", "gt": "s/gt.png"}], "video": "s/video.mp4"}
    with caplog.at_level(logging.WARNING):
        referenced = write_report(tmp_path, {}, [scene])
    assert referenced == ["s/render.png", "s/gt.png", "s/video.mp4"]
    missing = [r for r in referenced if not (tmp_path / r).exists()]
    assert missing == ["s/render.png", "s/video.mp4"]
    doc = (tmp_path / "index.html").read_text()
    assert "2 referenced file(s) missing" in doc and "missing: s/render.png" in doc
    assert "s/render.png" in caplog.text


@pytest.mark.parametrize("bad", ["../x.png", "/etc/passwd", "http://example.com/a.png", "javascript:alert(1)",
                                 "a\\..\\b.png", ""])
def test_unsafe_paths_rejected(tmp_path, bad):
    with pytest.raises(ValueError):
        write_report(tmp_path, {}, [{"name": "s", "targets": [{"render": bad, "gt": "g.png"}]}])
    assert not (tmp_path / "index.html").exists()


def test_scene_dict_format_is_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        write_report(tmp_path, {}, [{"name": "s", "renders": []}])
    with pytest.raises(ValueError, match="needs"):
        write_report(tmp_path, {}, [{"name": "s", "targets": [{"render": "r.png"}]}])
    with pytest.raises(ValueError, match="name"):
        write_report(tmp_path, {}, [{"inputs": []}])
