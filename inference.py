"""Thin shim: ``[torchrun ...] inference.py --config FILE [key=value ...]`` == ``wildrayzer infer ...``."""

import sys

from wildrayzer.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
