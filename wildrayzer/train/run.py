"""``wildrayzer train --config FILE [key=value ...]`` (also ``[torchrun ...] train.py``, ``python -m``)."""

from __future__ import annotations

import sys

from ..cli import parse_config_args, run_guarded


def main(argv: list[str]) -> int:
    cfg = parse_config_args(argv, "wildrayzer train", "Train one WildRayZer stage (single process or torchrun).")
    from .loop import train

    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, sys.argv[1:]))
