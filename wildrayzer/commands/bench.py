"""``wildrayzer bench <name> [args]``: run one of the repository's benchmark scripts (``benchmarks/*.py``).

Benchmarks print JSON lines and a results table; their figures go to ``benchmarks/RESULTS.md``. They are scripts in
the repository (not part of the installed package), so run this from the repository root.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import torch

from ..errors import UserError

SCRIPTS = {"speed": "speed.py", "quality": "quality.py", "synth": "bench_synth.py",
           "pseudolabel": "bench_pseudolabel.py", "headroom": "mask_headroom.py", "poses": "pose_probe.py",
           "detail": "detail.py", "amp": "amp.py"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SCRIPTS:
        names = " | ".join(SCRIPTS)
        if argv and argv[0] not in ("-h", "--help"):
            raise UserError(f"unknown benchmark '{argv[0]}'; choose one of {names}")
        print(f"usage: wildrayzer bench {{{names}}} [args]  (see benchmarks/<script>.py --help)")
        return 0
    script = Path("benchmarks") / SCRIPTS[argv[0]]
    if not script.is_file():
        raise UserError(f"{script} not found: run 'wildrayzer bench' from the repository root")
    old, grad, threads = sys.argv, torch.is_grad_enabled(), torch.get_num_threads()
    sys.argv = [str(script), *argv[1:]]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    finally:  # the script ran in this process: whatever it switched globally is switched back
        sys.argv = old
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)  # benchmarks take --threads
    return 0
