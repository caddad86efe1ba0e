"""``wildrayzer quickstart`` (what ``make quickstart`` runs): generate the embedded synthetic scenes if absent, then
evaluate the shipped tiny 2-view checkpoint on the held-out dynamic scenes and write the HTML report.

Extra ``key=value`` arguments override ``configs/tiny/wildrayzer_inference.yaml``. The embedded scenes are generated
only for the config's own ``data.root``; a ``data.root=...`` override must point at existing data.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import CheckpointError, UserError

PARTS = "checkpoints/wildrayzer_tiny_2view_parts"  # the stages the shipped model was made from
CONFIG = "configs/tiny/wildrayzer_inference.yaml"


def main(argv: list[str]) -> int:
    from ..config import load_config
    from ..data.synthetic import ensure_default_data
    from ..infer.run import run_inference

    if not Path(CONFIG).is_file():
        raise UserError(f"{CONFIG} not found: run quickstart from the repository root (make quickstart)")
    t0 = time.time()
    default = load_config(CONFIG, [])
    cfg = load_config(CONFIG, argv)
    if Path(cfg.data.root) == Path(default.data.root):  # <synthetic>/dynamic_re10k -> generate <synthetic>
        ensure_default_data(Path(default.data.root).parent)
    model_path = str(cfg.inference.model_path)
    if model_path == str(default.inference.model_path) and not Path(model_path).exists():
        raise CheckpointError(f"the shipped tiny checkpoint {model_path} is missing; restore it (git checkout -- "
                              f"{model_path}), retrain it from its committed posed start with `POSED={PARTS}/posed "
                              f"bash tools/posed_to_selfsup.sh OUT_DIR {model_path}` (about an hour on 2 CPU cores; "
                              "benchmarks/RESULTS.md v2.6, v2.8) or "
                              "pass inference.model_path=<pretrained dir or run dir>")
    summary = run_inference(cfg)
    print(f"quickstart finished in {time.time() - t0:.0f} s: {summary.get('num_scenes', 0)} scenes, results in "
          f"{Path(cfg.inference_out_root).resolve()}")
    return 0
