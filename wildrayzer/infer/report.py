"""The evaluation report: ``<inference_out_root>/index.html``, one self-contained page.

Inline CSS, no scripts, no external resources; every link is relative to ``out_root`` and every user-controlled string
(scene names, labels, file names, metric keys) is HTML-escaped. Per-scene images are written beforehand by the
runner (see :mod:`wildrayzer.infer.visuals`, :mod:`wildrayzer.infer.plucker_vis`, :mod:`wildrayzer.infer.video`).
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

from wildrayzer.infer.metrics import LOWER_IS_BETTER, METRIC_LABELS, format_value

log = logging.getLogger(__name__)

TITLE_COLOR = "#1d3c78"  # banner background; the browser test looks for this colour in the screenshot
_SCENE_KEYS = {"name", "dir", "metrics", "inputs", "targets", "plucker", "video", "files"}
_ITEM_KEYS = {  # per list: required kinds, optional kinds (a kind maps to a relative file path)
    "inputs": (("image",), ("overlay", "gt_overlay", "mask")),
    "targets": (("render", "gt"), ("error", "clean", "overlay")),
    "plucker": (("direction",), ("moment", "residual", "quiver")),
}
_KIND_CAPTIONS = {"image": "input", "overlay": "predicted mask", "gt_overlay": "GT mask", "mask": "mask",
                  "render": "render", "gt": "ground truth", "error": "|error|", "clean": "clean GT",
                  "direction": "direction", "moment": "|moment|", "residual": "Klein residual", "quiver": "quiver"}

_CSS = f"""
body {{ font-family: "DejaVu Sans", Arial, sans-serif; margin: 0; background: #f4f5f7; color: #1b1f24; }}
header {{ background: {TITLE_COLOR}; color: #ffffff; padding: 18px 28px; }}
header h1 {{ margin: 0; font-size: 26px; }}
header p {{ margin: 4px 0 0 0; opacity: 0.85; }}
main {{ padding: 16px 28px; }}
table {{ border-collapse: collapse; background: #ffffff; margin: 8px 0 18px 0; }}
th, td {{ border: 1px solid #c9ced6; padding: 4px 10px; text-align: right; font-size: 14px; }}
th {{ background: #e4e8ef; }}
td.name, th.name {{ text-align: left; }}
section.scene {{ background: #ffffff; border: 1px solid #c9ced6; border-radius: 6px; margin: 0 0 18px 0;
  padding: 10px 14px; }}
section.scene h2 {{ margin: 2px 0 6px 0; font-size: 19px; }}
.metrics {{ font-size: 13px; color: #3a4350; margin-bottom: 6px; }}
.row {{ display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; margin: 6px 0; }}
.row h3 {{ width: 100%; margin: 4px 0 0 0; font-size: 14px; color: #4a5563; }}
.group {{ display: flex; gap: 4px; padding: 4px; border: 1px solid #e0e3e8; border-radius: 4px; }}
figure {{ margin: 0; text-align: center; font-size: 12px; }}
figure img, figure video {{ display: block; width: 160px; height: auto; image-rendering: pixelated; }}
figure img.wide {{ width: 330px; }}
.missing {{ width: 160px; min-height: 60px; border: 2px dashed #c0392b; color: #c0392b; font-size: 11px;
  word-break: break-all; padding: 4px; box-sizing: border-box; }}
.warn {{ background: #fdecea; border: 1px solid #c0392b; padding: 8px 12px; border-radius: 4px; }}
"""


def _label(key: str) -> str:
    """Metric label with its better direction, e.g. "PSNR ↑" (the page is UTF-8)."""
    if key not in METRIC_LABELS:
        return key
    return f"{METRIC_LABELS[key]} {'↓' if key in LOWER_IS_BETTER else '↑'}"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _check_rel(path: object, where: str) -> str:
    """A safe relative POSIX path inside out_root, or ValueError."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"write_report: {where} must be a non-empty relative path string, got {path!r}")
    p = PurePosixPath(path)
    if "\\" in path or urlsplit(path).scheme or p.is_absolute() or ".." in p.parts:
        raise ValueError(f"write_report: {where} = {path!r} must be relative to out_root without '..' or a URL scheme")
    return str(p)


def _url(rel: str) -> str:
    return _esc(quote(rel, safe="/"))


class _Page:
    """Collects referenced files while the HTML is generated."""

    def __init__(self, out_root: Path) -> None:
        self.out_root = out_root
        self.referenced: list[str] = []
        self.missing: list[str] = []

    def ref(self, rel: str) -> bool:
        if rel not in self.referenced:
            self.referenced.append(rel)
            if not (self.out_root / rel).exists():
                self.missing.append(rel)
        return rel not in self.missing

    def figure(self, rel: str, caption: str, wide: bool = False) -> str:
        cap = f"<figcaption>{_esc(caption)}</figcaption>"
        if not self.ref(rel):
            return f'<figure><div class="missing">missing: {_esc(rel)}</div>{cap}</figure>'
        if rel.lower().endswith((".mp4", ".webm")):
            media = f'<video src="{_url(rel)}" controls loop muted playsinline></video>'
        else:
            cls = ' class="wide"' if wide else ""
            media = f'<a href="{_url(rel)}"><img src="{_url(rel)}" alt="{_esc(caption)}"{cls}></a>'
        return f"<figure>{media}{cap}</figure>"

    def link(self, rel: str, label: str) -> str:
        if not self.ref(rel):
            return f'<span class="missing">missing: {_esc(rel)}</span>'
        return f'<a href="{_url(rel)}">{_esc(label)}</a>'


def _metric_rows(means: Mapping[str, object], counts: Mapping[str, object] | None) -> str:
    keys = [k for k in METRIC_LABELS if k in means] + sorted(set(means) - set(METRIC_LABELS))
    rows = []
    for k in keys:
        v = means[k]
        if v is not None and not isinstance(v, (int, float)):
            raise ValueError(f"write_report: summary metric {k!r} must be a number or None, got {type(v).__name__}")
        val = format_value(k, None if v is None or not math.isfinite(v) else float(v))
        n = "" if counts is None else f"<td>{_esc(counts.get(k, ''))}</td>"
        rows.append(f'<tr><td class="name">{_esc(_label(k))}</td><td>{_esc(val)}</td>{n}</tr>')
    head = '<tr><th class="name">metric</th><th>mean</th>' + ("<th>scenes</th>" if counts is not None else "")
    return f"<table>{head}</tr>{''.join(rows)}</table>"


def _scene_table(scenes: Sequence[Mapping], keys: list[str]) -> str:
    head = '<tr><th class="name">scene</th>' + "".join(f"<th>{_esc(_label(k))}</th>" for k in keys)
    rows = []
    for i, sc in enumerate(scenes):
        m = sc.get("metrics") or {}
        cells = "".join(f"<td>{_esc(format_value(k, m.get(k)))}</td>" for k in keys)
        rows.append(f'<tr><td class="name"><a href="#scene-{i}">{_esc(sc["name"])}</a></td>{cells}</tr>')
    return f"<table>{head}</tr>{''.join(rows)}</table>"


def _validate_scene(i: int, sc: Mapping) -> None:
    if not isinstance(sc, Mapping) or "name" not in sc:
        raise ValueError(f"write_report: scenes[{i}] must be a dict with at least 'name'")
    extra = set(sc) - _SCENE_KEYS
    if extra:
        raise ValueError(f"write_report: scenes[{i}] has unknown keys {sorted(extra)}; allowed {sorted(_SCENE_KEYS)}")
    for list_key, (required, optional) in _ITEM_KEYS.items():
        for j, item in enumerate(sc.get(list_key) or []):
            where = f"scenes[{i}].{list_key}[{j}]"
            bad = set(item) - set(required) - set(optional) - {"label"}
            if bad or any(k not in item for k in required):
                raise ValueError(f"write_report: {where} needs {list(required)}, may have {list(optional)} and "
                                 f"'label'; got {sorted(item)}")
            for kind in (*required, *optional):
                if item.get(kind) is not None:
                    _check_rel(item[kind], f"{where}.{kind}")
    for key in ("dir", "video"):
        if sc.get(key) is not None:
            _check_rel(sc[key], f"scenes[{i}].{key}")
    for label, rel in (sc.get("files") or {}).items():
        _check_rel(rel, f"scenes[{i}].files[{label!r}]")
    metrics = sc.get("metrics") or {}
    for k, v in metrics.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"write_report: scenes[{i}].metrics[{k!r}] must be a number or None")


def _scene_html(page: _Page, i: int, sc: Mapping) -> str:
    name = _esc(sc["name"])
    title = page.link(_check_rel(sc["dir"], "dir"), str(sc["name"])) if sc.get("dir") else name
    metrics = sc.get("metrics") or {}
    mtxt = " · ".join(f"{_esc(_label(k))} {_esc(format_value(k, v))}" for k, v in metrics.items())
    parts = [f'<section class="scene" id="scene-{i}"><h2>{title}</h2>']
    if mtxt:
        parts.append(f'<div class="metrics">{mtxt}</div>')
    for list_key, heading in (("inputs", "Inputs and motion masks"), ("targets", "Renders vs ground truth"),
                              ("plucker", "Plücker rays")):
        items = sc.get(list_key) or []
        if not items:
            continue
        groups = []
        for j, item in enumerate(items):
            label = item.get("label", f"view {j}")
            figs = [page.figure(item[k], f"{label}: {_KIND_CAPTIONS[k]}", wide=(k == "quiver"))
                    for k in (*_ITEM_KEYS[list_key][0], *_ITEM_KEYS[list_key][1]) if item.get(k) is not None]
            groups.append(f'<div class="group">{"".join(figs)}</div>')
        parts.append(f'<div class="row"><h3>{heading}</h3>{"".join(groups)}</div>')
    if sc.get("video"):
        parts.append(f'<div class="row"><h3>Novel-view video</h3>{page.figure(sc["video"], "interpolated path", True)}'
                     "</div>")
    files = sc.get("files") or {}
    if files:
        parts.append('<div class="metrics">' + " · ".join(page.link(rel, label) for label, rel in files.items())
                     + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def write_report(out_root: str | Path, summary_metrics: Mapping, scenes: Sequence[Mapping],
                 title: str = "WildRayZer evaluation report") -> list[str]:
    """Write ``out_root/index.html`` and return every file it references (relative to ``out_root``, in order).

    ``summary_metrics``: dataset means ``{key: float | None}`` (``None`` shows as "n/a"), or
    :meth:`MetricsAggregator.summary` output (its ``"mean"`` and ``"count"`` are used).

    ``scenes``: one dict per scene, every path relative to ``out_root`` (POSIX, no ``..``, no URL scheme)::

        {
          "name": "scene_0001",                     # any string; shown escaped (required)
          "dir": "scene_0001",                      # optional: folder the title links to
          "metrics": {"psnr": 21.3, "lpips": None},  # optional: this scene's values, keys as in METRIC_LABELS
          "inputs":  [{"label": "input 0", "image": "scene_0001/input_00.png",
                       "overlay": "…/input_00_pred_overlay.png", "gt_overlay": "…", "mask": "…"}],
          "targets": [{"label": "target 0", "render": "…/render_00.png", "gt": "…/gt_00.png",
                       "error": "…/error_00.png", "clean": "…", "overlay": "…"}],
          "plucker": [{"label": "target 0", "direction": "…", "moment": "…", "residual": "…", "quiver": "…"}],
          "video": "scene_0001/video.gif",          # optional: .gif shown as an image, .mp4/.webm as <video>
          "files": {"cameras.json": "scene_0001/cameras.json"},  # optional extra links
        }

    Required per item: inputs ``image``; targets ``render`` and ``gt``; plucker ``direction``; the other kinds and
    ``label`` are optional (``None`` = absent). Unknown keys or unsafe paths raise ``ValueError``. Referenced files
    that do not exist are shown as "missing" boxes, listed at the top of the page and logged as warnings.
    """
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    for i, sc in enumerate(scenes):
        _validate_scene(i, sc)
    summary = dict(summary_metrics)
    counts = None
    if isinstance(summary.get("mean"), Mapping):
        counts = summary.get("count") if isinstance(summary.get("count"), Mapping) else None
        summary = dict(summary["mean"])
    page = _Page(out_root)
    scene_keys = [k for k in METRIC_LABELS if any(k in (s.get("metrics") or {}) for s in scenes)]
    body = [_scene_html(page, i, sc) for i, sc in enumerate(scenes)]
    warn = ""
    if page.missing:
        log.warning("report %s: %d referenced file(s) missing: %s", out_root / "index.html", len(page.missing),
                    ", ".join(page.missing[:5]))
        items = "".join(f"<li>{_esc(m)}</li>" for m in page.missing)
        warn = f'<div class="warn"><b>{len(page.missing)} referenced file(s) missing</b><ul>{items}</ul></div>'
    doc = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_esc(title)}</h1><p>{len(scenes)} scene(s)</p></header><main>", warn,
        "<h2>Summary (mean over scenes)</h2>", _metric_rows(summary, counts),
        *(["<h2>Per-scene metrics</h2>", _scene_table(scenes, scene_keys)] if scene_keys else []),
        "<h2>Scenes</h2>", *body, "</main></body></html>",
    ])
    tmp = out_root / "index.html.tmp"
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, out_root / "index.html")
    return list(page.referenced)
