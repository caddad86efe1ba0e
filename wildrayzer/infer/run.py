"""``inference.py`` / ``wildrayzer infer``: evaluate a checkpoint on a test split and write the results page.

Per scene (``<inference_out_root>/<scene>/``): inputs, predicted motion masks (PNG + overlay), rendered targets, GT
targets, error maps, ``cameras.json`` (predicted, LVSM-compatible), ``metrics.json``; optional Plücker visualisations
and a video. Each scene is written into a temporary folder and renamed when complete, so an interrupted run leaves no
half-written scene; re-running skips finished scenes. Under torchrun scenes are sharded over ranks and rank 0 merges
the metrics (``metrics.json``), prints the table and writes ``index.html``.

Inference deletes or overwrites only what it can prove it wrote: the output root must be new, empty, or carry the
``.wildrayzer-output`` marker written on first use; a scene folder (or temp folder) is replaced only when it carries
``.wildrayzer-scene`` (see :mod:`.scene_io`). Anything else is a one-line error before anything is written. The
dataset index, the checkpoint and the LPIPS weights are read before the output root is created, so a bad input
leaves no output folder behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path

import torch

from ..errors import UserError
from ..fileio import has_marker, write_marker
from .metrics import MetricsAggregator, format_metrics_table
from .scene_io import RUN_KEY, SCENE_RECORD, TMP_PREFIX, check_replaceable, remove_own, write_scene

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_RESERVED = {"index.html", "index.html.tmp", "metrics.json", "metrics.json.tmp"}  # files the runner writes in the root
ROOT_MARKER = ".wildrayzer-output"  # written into the output root on first use: the root and its files are ours
ROOT_KIND = "wildrayzer-inference-output"
# the runner's own short-lived files, which another torchrun rank may see while it inspects a fresh root
_TRANSIENT = re.compile(r"\.write_test\.\d+|\.\.wildrayzer-output\.tmp\d+")


def safe_scene_dirname(name: str, taken: set[str]) -> str:
    """A folder name made of [A-Za-z0-9._-] that cannot leave the output root and is unique within ``taken``."""
    base = _SAFE.sub("_", name).strip("._") or "scene"
    base = base[:96]
    out, i = base, 1
    while out in taken or out.lower() in _RESERVED:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


def check_unused_options(cfg) -> None:
    """``inference.split``, ``batch_size`` and ``compute_metrics`` come from the published config layout but change
    nothing here: a value that asks for other behaviour is an error instead of being ignored."""
    inf = cfg.inference
    if inf.split not in ("test", cfg.data.split):  # "test" is the layout's default: data.split decides
        raise UserError(f"inference.split={inf.split} but data.split={cfg.data.split}: the evaluated split is "
                        f"data.split; set data.split={inf.split}")
    if inf.batch_size != 1:
        raise UserError(f"inference.batch_size={inf.batch_size} is not supported: scenes are evaluated one at a time "
                        "(set it to 1; use torchrun to spread scenes over processes)")
    if not inf.compute_metrics:
        raise UserError("inference.compute_metrics=false is not supported: metrics are computed wherever the data has "
                        "ground truth (set it to true)")


def check_output_root(out_root: Path, data_root: Path, claim: bool = True) -> None:
    """The output root must be writable, must not sit inside the dataset, and must be new, empty or already marked
    as a WildRayZer output folder (a folder holding anything else is refused before anything is written). With
    ``claim`` it is then created, probed for writing and marked; without, nothing is written (the early check)."""
    o, d = out_root.resolve(), data_root.resolve()
    if o == d or d in o.parents:
        raise UserError(f"inference_out_root={out_root} lies inside the dataset {data_root}; choose a folder outside "
                        "the data directory (e.g. experiments/evaluation/<name>)")
    try:
        entries = sorted(n for n in os.listdir(o) if not _TRANSIENT.fullmatch(n)) if o.exists() else []
        marked = has_marker(o, ROOT_MARKER, ROOT_KIND)
        if entries and not marked:
            shown = ", ".join(repr(n) for n in entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise UserError(f"inference_out_root={out_root} is not empty ({shown}) and was not created by WildRayZer "
                            f"(no {ROOT_MARKER} marker); inference never overwrites or deletes what it did not write: "
                            "use a new or empty folder (e.g. experiments/evaluation/<name>)")
        if not claim:
            return
        o.mkdir(parents=True, exist_ok=True)
        probe = o / f".write_test.{os.getpid()}"  # per process: torchrun ranks probe at the same time
        probe.write_text("ok")
        probe.unlink()
        if not marked:
            write_marker(o, ROOT_MARKER, ROOT_KIND)
    except OSError as e:
        raise UserError(f"inference_out_root={out_root} is not writable ({e.strerror}); choose another "
                        "folder") from None


def check_scene_targets(out_root: Path, dirs: list[str]) -> None:
    """Before anything is written: every scene folder (and its temp folder) the run may replace is the runner's."""
    for d in dirs:
        check_replaceable(out_root / d)
        check_replaceable(out_root / f"{TMP_PREFIX}{d}")


@torch.no_grad()  # a decorator, not set_grad_enabled(False): in-process callers keep their global grad state
def run_inference(cfg, progress: bool = True) -> dict:
    """Evaluate ``cfg.inference.model_path`` on ``cfg.data`` (eval mode). Returns the summary (rank 0)."""
    from ..data import build_dataset
    from ..distributed import barrier, cleanup, init_distributed
    from .lpips import maybe_load_lpips
    from .pipeline import Pipeline, check_checkpoint_exists

    out_root = Path(cfg.inference_out_root)
    check_unused_options(cfg)
    check_checkpoint_exists(cfg.inference.model_path)
    check_output_root(out_root, Path(cfg.data.root), claim=False)
    info = init_distributed(cfg.inference.device)
    try:
        # Loaded on the CPU, then moved to this rank's device: device="auto" here would select (and make current)
        # cuda:0 in every torchrun rank.
        pipe = Pipeline.load(cfg.inference.model_path, expected_cfg=cfg, device="cpu", semantic_cfg=cfg.semantic)
        pipe.device = info.device
        pipe.model.to(pipe.device)
        if pipe.semantic is not None:
            pipe.semantic.to(pipe.device)
        lpips_model = maybe_load_lpips(cfg.inference.lpips_weights_path or None)
        if lpips_model is not None:
            lpips_model = lpips_model.to(pipe.device).eval()
        dataset = build_dataset(cfg, "eval")
        n = len(dataset) if cfg.inference.max_scenes <= 0 else min(len(dataset), cfg.inference.max_scenes)
        if n == 0:
            raise UserError(f"no evaluation scenes found under {cfg.data.root}/{cfg.data.split}")
        names = [dataset.scenes[dataset.items[i][0]].name for i in range(n)]
        check_output_root(out_root, Path(cfg.data.root))  # model, LPIPS and data are good: only now is it created
        taken: set[str] = set()
        dirs = [safe_scene_dirname(s, taken) for s in names]
        check_scene_targets(out_root, dirs)  # every rank, read-only, before rank 0 clears anything
        barrier(info)
        if info.is_main:
            clear_partial(out_root)  # temp folders of a killed run; before any rank starts writing its own
        barrier(info)
        key = run_key(cfg, pipe.path)
        mine = list(range(info.rank, n, info.world_size))
        bar = _progress(mine, progress and info.is_main, "scenes")
        for i in bar:
            if is_finished(out_root / dirs[i], key):
                continue  # finished by an earlier run with the same checkpoint, data and outputs
            item = dataset[i]
            if item["scene"] != names[i]:  # data.on_error=skip replaced a broken sample by another one
                print(f"warning: scene {names[i]} could not be loaded; left out", file=sys.stderr)
                continue
            write_scene(pipe, item, out_root, dirs[i], cfg, lpips_model, run_key=key)
        barrier(info)  # every scene is written before rank 0 merges them
        summary, failure = {}, None
        if info.is_main:
            try:
                summary = finalize(out_root, dirs, cfg)
            except Exception as e:  # re-raised below, once the other ranks are no longer waiting for this one
                failure = e
        # No rank leaves the gloo group while rank 0 is still writing the report: a rank that destroyed it early
        # aborted once at exit ("terminate called without an active exception"), failing a finished run.
        barrier(info)
        if failure is not None:
            raise failure
        return summary
    finally:
        cleanup()


def run_key(cfg, weights: Path) -> dict:
    """What a finished scene folder depends on: the checkpoint file (path, size, mtime), the evaluation data and the
    options that change the written files. A re-run skips a scene only when its stored key is equal."""
    st = Path(weights).stat()
    d, inf = cfg.data, cfg.inference
    return {"weights": str(Path(weights).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "data": [str(Path(d.root).resolve()), d.split, d.list_file, d.view_idx_file],
            "outputs": [inf.compute_metrics, inf.lpips_weights_path, inf.save_plucker_vis, inf.plucker_vis_stride,
                        inf.plucker_vis_include_quiver, inf.render_video, inf.video_frames, inf.video_format]}


def is_finished(scene_dir: Path, key: dict) -> bool:
    try:
        return json.loads((scene_dir / SCENE_RECORD).read_text()).get(RUN_KEY) == key
    except (OSError, ValueError):
        return False


def finalize(out_root: Path, dirs: list[str], cfg) -> dict:
    """Merge per-scene records into ``metrics.json``, print the table and write ``index.html``."""
    from .report import write_report

    if not has_marker(out_root, ROOT_MARKER, ROOT_KIND):  # root files are overwritten only in the runner's own root
        raise UserError(f"inference_out_root={out_root} lost its {ROOT_MARKER} marker during the run; metrics.json "
                        "and index.html were not written")
    agg = MetricsAggregator()
    scenes = []
    for d in dirs:
        if not (out_root / d / SCENE_RECORD).is_file():
            continue
        rec = json.loads((out_root / d / SCENE_RECORD).read_text())
        rec.pop(RUN_KEY, None)  # bookkeeping, not part of the report's scene entry
        agg.add(rec["name"], rec["metrics"])
        scenes.append(rec)
    summary = agg.summary()
    summary["checkpoint"] = str(cfg.inference.model_path)
    summary["num_scenes"] = len(scenes)
    tmp = out_root / "metrics.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out_root / "metrics.json")
    print(format_metrics_table(summary["mean"], summary.get("count")))
    if cfg.inference.make_report:
        write_report(out_root, summary, scenes)
        print(f"report: {(out_root / 'index.html').resolve()}")
    return summary


def _progress(items, enabled: bool, unit: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, unit=unit, dynamic_ncols=True, file=sys.stderr)


def clear_partial(out_root: Path) -> None:
    """Remove temporary scene folders left by a killed run: only folders named like the runner's temp folders that
    carry its scene marker (or are empty: killed between ``mkdir`` and the marker); anything else stays."""
    for p in out_root.glob(f"{TMP_PREFIX}*"):
        with contextlib.suppress(UserError, OSError):  # UserError: not the runner's, left alone
            remove_own(p)


def main(argv: list[str]) -> int:
    from ..cli import parse_config_args

    cfg = parse_config_args(argv, "wildrayzer infer", "Evaluate a checkpoint and write the HTML report")
    run_inference(cfg, progress=bool(cfg.logging.progress))
    return 0
