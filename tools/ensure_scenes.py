"""Make ``data/synthetic_N`` (N static + N dynamic training scenes, the set ``wildrayzer schedule --train-scenes N``
expects) unless it is there, on every core; used by tools/gpu_schedule.sh and tools/posed_to_selfsup.sh.

    python tools/ensure_scenes.py N

A finished set made with other parameters is left alone: one ``error:`` line, exit 2."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout works without installing the package

from wildrayzer.data.synthetic import SynthParams, ensure_default_data  # noqa: E402
from wildrayzer.errors import UserError  # noqa: E402

if __name__ == "__main__":
    try:
        n = int(sys.argv[1])
        ensure_default_data(f"data/synthetic_{n}", SynthParams(static_train=n, dynamic_train=n),
                            workers=os.cpu_count() or 1)
    except (IndexError, ValueError):
        print("usage: python tools/ensure_scenes.py N", file=sys.stderr)
        sys.exit(2)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
