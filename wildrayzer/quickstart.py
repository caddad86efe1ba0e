"""``wildrayzer quickstart`` (what ``make quickstart`` runs): generate the embedded synthetic scenes if absent, then
evaluate the shipped tiny 2-view checkpoint on the held-out dynamic scenes and write the HTML report.

Extra ``key=value`` arguments override ``configs/tiny/wildrayzer_inference.yaml``.
"""

from __future__ import annotations

import time
from pathlib import Path

from .errors import UserError

CONFIG = "configs/tiny/wildrayzer_inference.yaml"


def main(argv: list[str]) -> int:
    from .config import load_config
    from .data.synthetic import ensure_default_data
    from .infer.run import run_inference

    if not Path(CONFIG).is_file():
        raise UserError(f"{CONFIG} not found: run quickstart from the repository root (make quickstart)")
    t0 = time.time()
    ensure_default_data("data/synthetic")
    cfg = load_config(CONFIG, argv)
    summary = run_inference(cfg)
    print(f"quickstart finished in {time.time() - t0:.0f} s: {summary.get('num_scenes', 0)} scenes, results in "
          f"{Path(cfg.inference_out_root).resolve()}")
    return 0
