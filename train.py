"""Thin shim: ``[torchrun ...] train.py --config FILE [key=value ...]`` == ``wildrayzer train ...``."""

import sys

from wildrayzer.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
